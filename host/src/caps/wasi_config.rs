//! `wasi:config/store`, under the three names the proposal's one interface
//! was published with (`0.2.0-draft`, `0.2.0-draft-2024-09-27`,
//! `0.2.0-rc.1`): the strings of the manifest's `[config]` table. Nothing
//! else is config: not the secrets (`spike:host/secrets`, the operator's),
//! not the environment (`[env]`, through `wasi:cli`).

use wasmtime::component::{HasData, Linker};

use crate::bindings::wasi::config0_2_0_draft as draft;
use crate::bindings::wasi::config0_2_0_draft_2024_09_27 as dated;
use crate::bindings::wasi::config0_2_0_rc_1 as rc1;

/// A plugin's config, as a guest reads it.
pub struct ConfigView<'a> {
    /// The `[config]` table, sorted by key.
    pub values: &'a [(String, String)],
}

impl ConfigView<'_> {
    fn get(&self, key: &str) -> Option<String> {
        let at = self.values.binary_search_by(|(k, _)| k.as_str().cmp(key));
        at.ok().map(|i| self.values[i].1.clone())
    }

    fn all(&self) -> Vec<(String, String)> {
        self.values.to_vec()
    }
}

impl draft::store::Host for ConfigView<'_> {
    fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, draft::store::Error>> {
        Ok(Ok(ConfigView::get(self, &key)))
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, draft::store::Error>> {
        Ok(Ok(self.all()))
    }
}

impl dated::store::Host for ConfigView<'_> {
    fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, dated::store::Error>> {
        Ok(Ok(ConfigView::get(self, &key)))
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, dated::store::Error>> {
        Ok(Ok(self.all()))
    }
}

impl rc1::store::Host for ConfigView<'_> {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, rc1::store::Error>> {
        Ok(Ok(ConfigView::get(self, &key)))
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, rc1::store::Error>> {
        Ok(Ok(self.all()))
    }
}

struct HasConfig;

impl HasData for HasConfig {
    type Data<'a> = ConfigView<'a>;
}

/// Adds `wasi:config/store` under each of its names to the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> ConfigView<'_>,
) -> wasmtime::Result<()> {
    draft::store::add_to_linker::<T, HasConfig>(linker, view)?;
    dated::store::add_to_linker::<T, HasConfig>(linker, view)?;
    rc1::store::add_to_linker::<T, HasConfig>(linker, view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_table() {
        let values = [("a".to_string(), "1".to_string()), ("b".into(), "2".into())];
        let mut view = ConfigView { values: &values };
        assert_eq!(
            rc1::store::Host::get(&mut view, "b".into())
                .unwrap()
                .unwrap()
                .as_deref(),
            Some("2")
        );
        assert_eq!(
            draft::store::Host::get(&mut view, "c".into())
                .unwrap()
                .unwrap(),
            None
        );
        assert_eq!(
            dated::store::Host::get_all(&mut view).unwrap().unwrap(),
            values.to_vec()
        );
    }
}
