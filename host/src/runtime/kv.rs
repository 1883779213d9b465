//! Plugin-private key-value state, behind a trait the store implements, and
//! the per-plugin quota the host keeps on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Largest key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Largest value, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// What one plugin holds in its namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KvUsage {
    /// Keys stored.
    pub keys: u64,
    /// Bytes stored, keys and values together.
    pub bytes: u64,
}

/// Where plugin key-value state lives. Namespaced by plugin name, so a plugin
/// reads only what it wrote. Errors are messages handed to the plugin.
pub trait KvBackend: Send + Sync {
    /// The value at `key` in `plugin`'s namespace.
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Store a value.
    fn set(&self, plugin: &str, key: &str, value: Vec<u8>) -> Result<(), String>;
    /// Remove a key.
    fn delete(&self, plugin: &str, key: &str) -> Result<(), String>;
    /// What `plugin`'s namespace holds (read once per plugin per process;
    /// the host keeps count from then on).
    fn usage(&self, plugin: &str) -> Result<KvUsage, String>;
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
    fn usage(&self, plugin: &str) -> Result<KvUsage, String> {
        let map = self.map.lock().map_err(|_| "kv poisoned".to_string())?;
        Ok(map.iter().filter(|((p, _), _)| p == plugin).fold(
            KvUsage::default(),
            |u, ((_, k), v)| KvUsage {
                keys: u.keys + 1,
                bytes: u.bytes + (k.len() + v.len()) as u64,
            },
        ))
    }
}

/// A plugin's key-value quota, from its manifest.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KvQuota {
    pub max_keys: u64,
    pub max_bytes: u64,
}

/// The backend with usage counted per plugin, so a quota is checked without
/// scanning on every write. One lock for all plugins: writes are rare
/// (connectors keep a few ids), and it makes check-then-write atomic.
pub(crate) struct MeteredKv {
    backend: Arc<dyn KvBackend>,
    usage: Mutex<HashMap<String, KvUsage>>,
}

impl MeteredKv {
    pub fn new(backend: Arc<dyn KvBackend>) -> Self {
        Self {
            backend,
            usage: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        check_key(key)?;
        self.backend.get(plugin, key)
    }

    /// Store a value if the plugin's quota has room for it; the error names
    /// the quota.
    pub fn set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        quota: KvQuota,
    ) -> Result<(), String> {
        check_key(key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(format!(
                "value is {} bytes; the limit is {MAX_VALUE_LEN}",
                value.len()
            ));
        }
        let mut all = self.usage.lock().map_err(|_| "kv poisoned".to_string())?;
        let usage = self.counted(&mut all, plugin)?;
        let old = self
            .backend
            .get(plugin, key)?
            .map(|v| (key.len() + v.len()) as u64);
        let keys = usage.keys + u64::from(old.is_none());
        let bytes = usage.bytes - old.unwrap_or(0) + (key.len() + value.len()) as u64;
        if keys > quota.max_keys {
            return Err(format!(
                "kv quota: plugin {plugin} may hold at most {} keys (limits.kv_max_keys) and holds {}",
                quota.max_keys, usage.keys
            ));
        }
        if bytes > quota.max_bytes {
            return Err(format!(
                "kv quota: plugin {plugin} may hold at most {} bytes (limits.kv_max_bytes) and holds {}; this value needs {}",
                quota.max_bytes,
                usage.bytes,
                key.len() + value.len()
            ));
        }
        self.backend.set(plugin, key, value)?;
        all.insert(plugin.to_string(), KvUsage { keys, bytes });
        Ok(())
    }

    pub fn delete(&self, plugin: &str, key: &str) -> Result<(), String> {
        check_key(key)?;
        let mut all = self.usage.lock().map_err(|_| "kv poisoned".to_string())?;
        let usage = self.counted(&mut all, plugin)?;
        if let Some(old) = self.backend.get(plugin, key)? {
            self.backend.delete(plugin, key)?;
            all.insert(
                plugin.to_string(),
                KvUsage {
                    keys: usage.keys.saturating_sub(1),
                    bytes: usage.bytes.saturating_sub((key.len() + old.len()) as u64),
                },
            );
        }
        Ok(())
    }

    /// What `plugin` holds now.
    pub fn usage(&self, plugin: &str) -> Result<KvUsage, String> {
        let mut all = self.usage.lock().map_err(|_| "kv poisoned".to_string())?;
        self.counted(&mut all, plugin)
    }

    fn counted(&self, all: &mut HashMap<String, KvUsage>, plugin: &str) -> Result<KvUsage, String> {
        if let Some(u) = all.get(plugin) {
            return Ok(*u);
        }
        let u = self.backend.usage(plugin)?;
        all.insert(plugin.to_string(), u);
        Ok(u)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_counts_keys_and_bytes_and_overwrites_in_place() {
        let kv = MeteredKv::new(Arc::new(MemoryKv::default()));
        let quota = KvQuota {
            max_keys: 2,
            max_bytes: 100,
        };
        kv.set("p", "a", vec![0; 40], quota).unwrap();
        kv.set("p", "a", vec![0; 60], quota).unwrap();
        assert_eq!(kv.usage("p").unwrap(), KvUsage { keys: 1, bytes: 61 });
        let e = kv.set("p", "b", vec![0; 40], quota).unwrap_err();
        assert!(e.contains("at most 100 bytes (limits.kv_max_bytes)"), "{e}");
        kv.set("p", "b", vec![0; 30], quota).unwrap();
        let e = kv.set("p", "c", vec![], quota).unwrap_err();
        assert!(e.contains("at most 2 keys (limits.kv_max_keys)"), "{e}");
        kv.delete("p", "a").unwrap();
        assert_eq!(kv.usage("p").unwrap(), KvUsage { keys: 1, bytes: 31 });
        kv.set("p", "c", vec![], quota).unwrap();
        // Another plugin's namespace has its own count.
        assert_eq!(kv.usage("q").unwrap(), KvUsage::default());
    }
}
