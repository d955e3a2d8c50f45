// Package pipeline parses and validates pipeline specs: the YAML documents
// users write to say what to move, from where, to where, and how to bound
// each task. Every error names the field and the line it was found on.
//
// A pipeline of pattern incremental has an incremental section (required
// for that pattern, refused for every other):
//
//	incremental:
//	  delta_column: updated_at     # timestamptz, timestamp or date column of the source
//	  window: 1h                   # the most one run covers (Go duration, or "1d")
//	  lag: 5m                      # late-data guard: never read past now - lag
//	  start: 2026-01-01T00:00:00Z  # where the first run starts (RFC 3339)
//
// window must be positive, lag zero or more; start is needed only until the
// pipeline has a watermark (a run without either is refused).
package pipeline
