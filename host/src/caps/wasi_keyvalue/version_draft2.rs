//! `wasi:keyvalue@0.2.0-draft2` (Spin): the last key as the list cursor,
//! a signed increment, and compare-and-swap.

use wasmtime::component::Resource;

use super::*;

impl draft2::store::Host for KvView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Namespace>, draft2::store::Error>> {
        let opened = self.open_granted(identifier);
        self.answer(opened)
    }
}

impl draft2::store::HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<Namespace>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, draft2::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.value(&ns, &key).await;
        self.answer(r)
    }

    async fn set(
        &mut self,
        bucket: Resource<Namespace>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), draft2::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.write(&ns, &key, value).await;
        self.answer(r)
    }

    async fn delete(
        &mut self,
        bucket: Resource<Namespace>,
        key: String,
    ) -> wasmtime::Result<Result<(), draft2::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.erase(&ns, &key).await;
        self.answer(r)
    }

    async fn exists(
        &mut self,
        bucket: Resource<Namespace>,
        key: String,
    ) -> wasmtime::Result<Result<bool, draft2::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.exists(&ns, &key).await;
        self.answer(r)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Namespace>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<draft2::store::KeyResponse, draft2::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.page_after(&ns, cursor.as_deref()).await;
        self.answer(r.map(|(keys, cursor)| draft2::store::KeyResponse { keys, cursor }))
    }

    async fn drop(&mut self, bucket: Resource<Namespace>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl draft2::atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Namespace>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, draft2::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.add(&ns, &key, delta).await;
        self.answer(r)
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), draft2::atomics::CasError>> {
        use draft2::atomics::CasError;
        match self.cas_swap(cas, value).await {
            Ok(Ok(())) => Ok(Ok(())),
            Ok(Err(again)) => Ok(Err(CasError::CasFailed(again))),
            Err(e) => Ok(Err(CasError::StoreError(self.failure(e)?.into()))),
        }
    }
}

impl draft2::atomics::HostCas for KvView<'_> {
    async fn new(
        &mut self,
        bucket: Resource<Namespace>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, draft2::store::Error>> {
        let r = self.cas_new(&bucket, key).await;
        self.answer(r)
    }

    async fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, draft2::store::Error>> {
        let current = self.cas_current(&cas).await;
        self.answer(current)
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl draft2::batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Namespace>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, draft2::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.get_many(&ns, keys).await;
        self.answer(r)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Namespace>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), draft2::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.set_many(&ns, key_values).await;
        self.answer(r)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Namespace>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), draft2::store::Error>> {
        let (ops, ns) = self.bucket(&bucket)?;
        let r = ops.delete_many(&ns, keys).await;
        self.answer(r)
    }
}
