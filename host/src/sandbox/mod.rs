//! Local test doubles of the SaaS APIs connectors talk to. They are for
//! tests and demos only, never a production endpoint.

pub mod scim;
