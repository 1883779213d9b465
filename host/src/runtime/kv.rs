//! Plugin-private key-value state, behind a trait the store implements.

use std::collections::HashMap;
use std::sync::Mutex;

/// Largest key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Largest value, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// Where plugin key-value state lives. Namespaced by plugin name, so a plugin
/// reads only what it wrote. Errors are messages handed to the plugin.
pub trait KvBackend: Send + Sync {
    /// The value at `key` in `plugin`'s namespace.
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Store a value.
    fn set(&self, plugin: &str, key: &str, value: Vec<u8>) -> Result<(), String>;
    /// Remove a key.
    fn delete(&self, plugin: &str, key: &str) -> Result<(), String>;
}

/// In-memory state: for `itsm step run` and tests.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<HashMap<(String, String), Vec<u8>>>,
}

impl KvBackend for MemoryKv {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let map = self.map.lock().map_err(|_| "kv poisoned".to_string())?;
        Ok(map.get(&(plugin.to_string(), key.to_string())).cloned())
    }
    fn set(&self, plugin: &str, key: &str, value: Vec<u8>) -> Result<(), String> {
        let mut map = self.map.lock().map_err(|_| "kv poisoned".to_string())?;
        map.insert((plugin.to_string(), key.to_string()), value);
        Ok(())
    }
    fn delete(&self, plugin: &str, key: &str) -> Result<(), String> {
        let mut map = self.map.lock().map_err(|_| "kv poisoned".to_string())?;
        map.remove(&(plugin.to_string(), key.to_string()));
        Ok(())
    }
}

/// Checks that hold whatever the backend.
pub(crate) fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "key must be 1..={MAX_KEY_LEN} bytes, got {}",
            key.len()
        ));
    }
    Ok(())
}
