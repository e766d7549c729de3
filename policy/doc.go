// Package policy reads rollout policies: YAML bytes in, validated policies
// or file:line:col errors out.
//
// A policy file holds one or more YAML documents of kind Policy (see
// docs/POLICY.md for the format). Decoding is strict: unknown fields,
// duplicate keys, wrong types and out-of-range values are errors, every
// error in a file is reported at once with its position and field path,
// and a file with any error yields no policy. Anchors, aliases, nesting
// deeper than MaxDepth and files larger than MaxFileSize are refused before
// any expensive work, so hostile input cannot make Parse hang or allocate
// without bound.
//
// A parsed Policy has every default applied and presets expanded into
// steps. Its Normalized form is canonical YAML, and Hash identifies it in
// decisions. A Watcher reloads a directory of policies, handing over only
// complete, valid sets.
//
// The package does no logging and no network I/O; only Load and Watcher
// read files.
package policy
