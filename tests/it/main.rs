//! Every integration test in one binary (one link instead of fifteen): each former test crate
//! is a module here, so its name is the filter, e.g. `cargo test --test it real_cluster::`.
//! The helpers they share are in `support`. The heavy suites (a control plane, a node, the
//! hostile-client bounds) never run at the same time: see `support::suite_gate`.

mod support;

mod cache_watch;
mod certs_builtin;
mod chart;
mod config_map_watch;
mod differential;
mod engine_properties;
mod engine_validity;
mod golden;
mod monitoring;
mod mutate_cli;
mod real_cluster;
mod real_node;
mod server_drop_in;
mod server_hostile;
mod server_router;
mod server_sigterm;
mod server_tls;
