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
//
// Without delta_column the pipeline is partition-based: its source must be
// laid out by time (the files source's layout, such as
// "date={date}/hour={hour}"), window must equal the partition size (1h or
// 1d), start must lie on a partition boundary, and each run reads one whole
// partition once it is ready:
//
//	incremental:
//	  window: 1h                   # one partition per run
//	  start: 2026-11-25T00:00:00Z  # a partition boundary
//	  lag: 0s                      # a run for an hour is created once the hour is over, plus lag
//	  ready_timeout: 6h            # a run waiting longer for its partition fails (0: no limit)
//	  ready_check: 5s              # how often the leader checks a waiting run's partition
//
// Parse requires delta_column unless the source configuration has a
// layout; Validate asks the registry for the source's partition size
// (connectors.Registry.PartitionSize) and checks window and start against
// it.
package pipeline
