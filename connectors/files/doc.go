// Package files is the "files" connector: it reads and writes datasets of
// JSONL, CSV or Parquet files under a local directory or an S3 prefix
// (s3://bucket/prefix, through objstore).
//
// As a source it plans a directory listing into partitions of whole files
// (or byte ranges of large JSONL files), pins each file's size and
// modification time in the partition spec, and reads a partition the same
// way every time: JSONL and CSV pass through as canonical bytes, Parquet as
// Arrow records.
//
// As a sink it keeps a versioned dataset:
//
//	<path>/_staging/<run>/part-<task>.<ext>   task outputs of a running run
//	<path>/v000007/part-*.<ext>, _SUCCESS      committed versions
//	<path>/current -> v000007                  the exposed version
//
// A task attempt writes a temporary file and renames it into place on Close,
// so a retried task replaces its earlier output. Commit moves the outputs of
// a run into a new version directory by renames, swaps the current symlink
// atomically and writes the _SUCCESS marker last; every step can be repeated
// after a crash.
//
// # Object storage
//
// On S3, which has no rename and no symlink, the dataset keeps the same
// layout with a pointer object for the symlink:
//
//	<prefix>/_staging/<run>/part-<task>.<ext>   task outputs of a running run
//	<prefix>/v000007/part-*.<ext>, _SUCCESS      committed versions
//	<prefix>/current                             "v000007": the exposed version
//
// A task attempt uploads its output (a multipart upload, several parts at
// once, for outputs of more than one part) to its staging key: the object
// appears whole when the upload completes, replacing an earlier attempt's;
// an attempt that dies leaves an upload nobody sees, which the run's
// commit or abort aborts. Commit copies the outputs into v<N>/ on the
// server, then writes current (one PUT replaces it atomically), then
// v<N>/_SUCCESS, which lists the data files. Readers read current, then
// v<N>/. An incremental window is window=<from>_<to>/run=<run>/ behind
// the window's own current pointer. A source reads objects by ranged GETs
// carrying If-Match with the ETag it planned, so a byte-range task reads
// its range of a big object and a replaced object fails the task; inside
// the tree it reads, a directory holding a current pointer contributes
// only the directory it names. The change log Applier writes each file
// with one PUT. Credentials, region and endpoint come from the standard AWS
// environment; a configuration's s3 field may override the endpoint,
// region and addressing style, never hold a secret.
//
// As the sink of a cdc_apply pipeline, an Applier writes the change events
// of a cdc pipeline as a change log of JSON lines by table and hour,
// closing each hour with _SUCCESS once it is complete (see Applier).
//
// # Typed output
//
// When the run's plan has a schema (connectors.TaskRef.Schema: the postgres
// source describes its table from the catalog), the JSONL and Parquet
// outputs of CSV batches are typed by it, through arrowconv, never inferred
// from text: Parquet columns get the Arrow types arrowconv.Field gives
// (decimal(p,s), timestamp[us, UTC], date32, bool, binary, lists; json as a
// string flagged "sluice.json"; a decimal without a fixed-size form, a bare
// numeric or one of more than 38 digits, as a string holding every digit),
// and a JSONL line holds each value in its JSON form (arrowconv.Lines, see
// arrowconv's RowRenderer): numbers as numbers, decimals wider than 15
// digits as strings, booleans, nested JSON documents, arrays, bytes in
// base64, times in RFC 3339. A value its column cannot hold fails the task
// with its row and column. CSV output is the source's records either way.
// Without a schema, rows are converted as below (strings in JSONL, an
// inferred Parquet schema).
//
// # Canonical rows and checksums
//
// Checksums (connectors.Checksum) are sums of one hash per row over the
// row's canonical bytes as written: a JSONL line without its newline (CRLF
// normalized, surrounding blanks trimmed), or a CSV record as encoding/csv
// writes it, without its newline. A Parquet or Arrow row is rendered as
// the JSONL line the jsonl writer produces (arrowconv.RowRenderer): one
// object with the columns in schema order, each value in its JSON form
// (strings escaped minimally: only '"', '\\' and control characters;
// invalid UTF-8 becomes U+FFFD; timestamps as RFC 3339 strings, in UTC with
// a Z for those with a time zone). JSONL input written in this canonical
// form therefore gives the same checksum as its Parquet copy, and a typed
// JSONL output the same as a typed Parquet output of the same rows. A run's
// checksum is thus always what ReadChecksum recomputes from the files;
// for a CSV output of a postgres source it is also the source's.
//
// # Schema inference
//
// Without a typed schema, a sink writing Parquet from JSONL or CSV bytes
// infers the Arrow schema from the first batch of each task; later batches
// must fit it. Columns appear in the order their keys (or CSV header) first
// appear. For JSONL values:
// integer literals that fit are int64, other numbers float64 (int64 widens to
// float64), true/false are bool, strings that are RFC 3339 UTC timestamps
// with a 'Z', at most microsecond precision and written exactly as
// time.RFC3339Nano would write them are timestamp[us, UTC], other strings are
// string (a timestamp column seeing another string becomes string), objects
// and arrays are JSON-flagged strings holding their compact JSON text, and
// any other mix of kinds in one column makes it a JSON-flagged string too, so
// every value keeps its JSON text. A column that is null in the whole first
// batch is string. Missing keys are nulls; a key not in the schema, or a value
// of another kind in a later batch, is a *connectors.RowError. For CSV values
// the same rules apply to the text: an empty field is null, "true"/"false"
// bool, integer and decimal literals int64/float64, canonical RFC 3339 UTC
// timestamps timestamp[us, UTC], anything else string; mixed kinds become
// string.
//
// # Incremental windows
//
// A commit in connectors.ModeAppend (an incremental run) writes the run's
// window as its own directory, <path>/window=<from>_<to>/ (UTC, such as
// window=20260101T000000Z_20260101T010000Z), instead of a version: the task
// outputs are moved into a hidden building directory, _SUCCESS (with the
// run, rows, checksum and window) is written in it last, and it takes the
// window's name in one rename. A window committed again (a re-run, a
// backfill with --replace) is swapped with the earlier directory in one
// atomic exchange (renameat2 RENAME_EXCHANGE on Linux) and the earlier one
// removed: the window's rows are replaced, never doubled. Window
// directories lying inside a new, larger window are removed once it is in
// place; a partial overlap fails the commit, since rows cannot be split.
// A files source cannot read delta-column windows; it reads time
// partitions.
//
// # Compaction
//
// A Sink compacts its dataset (connectors.Compactor; see compact.go): the
// exposed version, the windows, the closed hours of a change log. The
// rewrites of a run's partitions are switched in together by one write of
// the dataset's switch manifest, _compacted/manifest.json, which the
// source follows (see switch.go), then swapped in each partition's own
// place for readers that do not read it.
//
// # Time partitions
//
// A source with a layout (SourceConfig.Layout, such as
// "date={date}/hour={hour}") is partition-based: an incremental run reads
// exactly the partition its window is, <path>/date=2026-11-25/hour=07/ for
// the window [07:00, 08:00) UTC (Glob and the format apply inside it; names
// starting with '_' or '.' are skipped, _SUCCESS among them). Partitions are
// 1h with {hour} and 24h without; a window that is not exactly one
// partition is a permanent error. The source implements
// connectors.Readiness: a partition is ready when it holds a _SUCCESS file,
// or, with ready: next_partition, also when the next partition's directory
// exists (date=2026-11-26/hour=00 after date=2026-11-25/hour=23). Under
// that convention an hour without a directory plans no task and commits an
// empty window. A run without a window (a full load) reads the whole tree.
package files
