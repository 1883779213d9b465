//! Plugin key-value state kept in the durable store: the adapter between
//! the runtime's [`KvBackend`] (what a plugin's `kv` import calls) and the
//! [`Store`]'s kv table. It lives here, above both, so neither the store
//! nor the runtime knows the other.

use crate::runtime::kv::{KvBackend, KvUsage};
use crate::store::Store;

/// Plugin key-value state served from a [`Store`].
pub struct StoreKv(pub std::sync::Arc<dyn Store>);

impl KvBackend for StoreKv {
    fn get(&self, plugin: &str, key: &str) -> std::result::Result<Option<Vec<u8>>, String> {
        self.0.kv_get(plugin, key).map_err(|e| e.to_string())
    }
    fn set(&self, plugin: &str, key: &str, value: Vec<u8>) -> std::result::Result<(), String> {
        self.0
            .kv_set(plugin, key, &value)
            .map_err(|e| e.to_string())
    }
    fn delete(&self, plugin: &str, key: &str) -> std::result::Result<(), String> {
        self.0.kv_delete(plugin, key).map_err(|e| e.to_string())
    }
    fn usage(&self, plugin: &str) -> std::result::Result<KvUsage, String> {
        let (keys, bytes) = self.0.kv_usage(plugin).map_err(|e| e.to_string())?;
        Ok(KvUsage { keys, bytes })
    }
}
