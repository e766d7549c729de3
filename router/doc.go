// Package router is the Go SDK for routers: the programs that split traffic
// between a rollout's baseline and canary and report how each request went.
//
// A router needs three things, each a type here:
//
//   - Table watches the routes bucket (KV verdict_routes) with one KV watcher
//     and keeps a local cache, so that picking a variant never touches the
//     network. Stale writes (a lower seq) are ignored, a rollback applies the
//     moment it arrives, and when NATS is down the last known weights stay.
//   - Route.Assign and Table.Assign map a unit (user, session) to a variant
//     with a stable hash (Point), so a unit that is on the canary stays there
//     as the weight grows and every unit returns to the baseline on rollback.
//   - Emitter publishes telemetry (single events or batches) to JetStream
//     asynchronously, from a bounded queue: when the queue is full it drops
//     and counts, and never blocks the request path.
//
// Proxy puts the three together as an http.Handler (a reverse proxy for one
// rollout), Mux serves several rollouts by host and path prefix, and
// Collector exposes the counters to Prometheus. The `verdict proxy` command
// is a thin wrapper around them. docs/ROUTERS.md is the user-facing guide,
// including the hash for routers written in other languages.
//
// # Concurrency
//
// Table, Emitter and Proxy are safe for concurrent use by any number of
// request handlers. Each owns at most one goroutine, whose lifetime is
// explicit: Table's runs inside Table.Run until its context ends, and
// Emitter's starts in NewEmitter and ends in Emitter.Close.
package router
