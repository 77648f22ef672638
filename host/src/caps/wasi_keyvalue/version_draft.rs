//! `wasi:keyvalue@0.2.0-draft` (wasmtime, wasmCloud): its numbered list
//! cursor and unsigned increment.

use wasmtime::component::Resource;

use super::*;

impl draft::store::Host for KvView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Namespace>, draft::store::Error>> {
        let opened = self.open_granted(identifier);
        self.answer(opened)
    }
}

impl draft::store::HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<Namespace>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, draft::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.value(&ns, &key).await;
        self.answer(r)
    }

    async fn set(
        &mut self,
        bucket: Resource<Namespace>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), draft::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.write(&ns, &key, value).await;
        self.answer(r)
    }

    async fn delete(
        &mut self,
        bucket: Resource<Namespace>,
        key: String,
    ) -> wasmtime::Result<Result<(), draft::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.erase(&ns, &key).await;
        self.answer(r)
    }

    async fn exists(
        &mut self,
        bucket: Resource<Namespace>,
        key: String,
    ) -> wasmtime::Result<Result<bool, draft::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.exists(&ns, &key).await;
        self.answer(r)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Namespace>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<draft::store::KeyResponse, draft::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.page_from(&ns, cursor.unwrap_or(0)).await;
        self.answer(r.map(|(keys, cursor)| draft::store::KeyResponse { keys, cursor }))
    }

    async fn drop(&mut self, bucket: Resource<Namespace>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl draft::atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Namespace>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, draft::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = async {
            let delta = i64::try_from(delta).map_err(|_| {
                CapError::InvalidInput(format!("delta {delta} is over the largest, 2^63-1"))
            })?;
            let n = ops.add(&ns, &key, delta).await?;
            // Only a value stored below zero by another interface's
            // increment ends there, which this version cannot return.
            u64::try_from(n).map_err(|_| {
                CapError::InvalidInput(format!(
                    "'{key}' is {n}, below zero, which draft's increment cannot return"
                ))
            })
        };
        let r = r.await;
        self.answer(r)
    }
}

impl draft::batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Namespace>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, draft::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.get_many(&ns, keys).await;
        self.answer(r)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Namespace>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), draft::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.set_many(&ns, key_values).await;
        self.answer(r)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Namespace>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), draft::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.delete_many(&ns, keys).await;
        self.answer(r)
    }
}
