//! Shared configuration documents on PostgreSQL (`itsm.documents`,
//! migration 3).

use super::PgStore;
use crate::error::Result;
use crate::store::Documents;

impl Documents for PgStore {
    fn get(&self, name: &str) -> Result<Option<(String, i64)>> {
        Ok(self
            .query(
                "read a shared document",
                "SELECT body, version FROM itsm.documents WHERE name = $1",
                vec![Box::new(name.to_string())],
            )?
            .first()
            .map(|r| (r.get(0), r.get(1))))
    }

    fn put(&self, name: &str, text: &str, version: Option<i64>) -> Result<bool> {
        let written = match version {
            None => self.execute(
                "write a shared document",
                "INSERT INTO itsm.documents (name, body, version) VALUES ($1, $2, 1)
                 ON CONFLICT (name) DO NOTHING",
                vec![Box::new(name.to_string()), Box::new(text.to_string())],
            )?,
            Some(v) => self.execute(
                "write a shared document",
                "UPDATE itsm.documents SET body = $2, version = version + 1, updated_at = now()
                 WHERE name = $1 AND version = $3",
                vec![
                    Box::new(name.to_string()),
                    Box::new(text.to_string()),
                    Box::new(v),
                ],
            )?,
        };
        Ok(written == 1)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, String, i64)>> {
        Ok(self
            .query(
                "list shared documents",
                "SELECT name, body, version FROM itsm.documents
                 WHERE starts_with(name, $1) ORDER BY name",
                vec![Box::new(prefix.to_string())],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }
}
