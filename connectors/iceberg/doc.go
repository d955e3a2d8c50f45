// Package iceberg is the "iceberg" connector: a sink that loads runs into
// an Apache Iceberg table, one commit a run, and a source that reads a
// table's snapshot or the data files appended since the last run. It uses
// apache/iceberg-go for the table's metadata, catalogs and storage, and
// arrow-go's Parquet writer for the data files.
//
// # Catalog and warehouse
//
// A table is named "namespace.table" in a catalog: a SQL catalog in a
// SQLite file (the default for a local warehouse: <warehouse>/catalog.db,
// fine for sluice dev, where every process is one), a SQL catalog in
// PostgreSQL (a cluster: every coordinator and worker uses the one
// database; its commits are compare-and-swaps in a transaction), or a REST
// catalog. New tables go to the warehouse: a local directory or
// s3://bucket/prefix. S3 (or any S3-compatible store) is reached with the
// standard AWS environment for credentials and region, and the s3
// settings (endpoint, region, path-style addressing) for the rest;
// credentials never appear in a spec.
//
// # Sink
//
// The leader's CheckSchema (before any task) creates the table from the
// run's schema on the first run, format version 2, unpartitioned; on later
// runs it adds the columns the source has and the table lacks, as
// optional columns, and refuses every other difference (a type, a
// required column the source may leave NULL or lacks), naming the column.
// Types map as: bool to boolean; int16 and int32 to int; int64 to long;
// float32 and float64 to float and double (NaN and infinities kept);
// decimal(p,s) to decimal(p,s), p up to 38 (a bare numeric, which has no
// precision, is refused); string and json to string; bytes to binary;
// date, time, timestamp and timestamptz to the same (microseconds); uuid
// to uuid; a list to a list of its element. A NOT NULL column is required.
//
// A task attempt converts its rows (CSV from the postgres source, JSONL,
// or Arrow records whose columns are the table's) by the table's column
// types (package arrowconv: a value that does not fit is refused with its
// row and column) into Parquet data files of its own, zstd, with the
// table's field ids, under <table>/data/sluice-<run>/, named after the
// task, the attempt and a random part, so that no two attempts share a
// file. Close writes the task's manifest, _<task>.task.json beside them,
// naming the files with their Iceberg statistics; an attempt that closes
// later replaces it. On S3 a file is uploaded in parts while it is
// written.
//
// The leader commits a run as one Iceberg transaction on the main branch,
// asserting that the branch has not moved since it loaded the table: a
// full load replaces every data file of the table by the run's (an
// overwrite snapshot), an incremental window deletes the window's rows by
// the delta column (dropping the files wholly inside, rewriting those
// partly inside) and appends the run's files, and a window without a
// delta column (a partition-based source) replaces the files that earlier
// commits of the same window added. A commit that another writer beats is
// reloaded and tried again, commit_attempts times. Each snapshot carries
// the run in its summary (sluice.run, with sluice.version, sluice.mode,
// sluice.window, sluice.rows, sluice.checksum): a commit repeated after a
// crash finds its snapshot and changes nothing more. After a commit the
// run's files that the table does not reference (attempts that lost or
// died, manifests, uploads in progress) are deleted, and a full load
// expires the snapshots of the versions beyond keep_versions, deleting the
// files only they referenced. Abort deletes a failed run's files; a
// failed run never touched the table, whose current snapshot stays.
//
// Versions lists the snapshots of full loads; Expose makes one current
// again: RollbackToSnapshot for an ancestor of the current snapshot, a
// move of the main branch for a newer one.
//
// # Source
//
// A run reads the current snapshot (or snapshot_id) whole, or with read:
// appended the data files that append snapshots added after the snapshot
// the previous run reached (its watermark, a snapshot id; overwrites and
// deletes in between are not read). Data files are grouped, whole, into
// partitions of about target_mb; a partition's files are read at its
// snapshot, deletes applied, as Arrow records. The plan's schema is the
// table's.
//
// # Limits
//
// The sink writes unpartitioned tables of format versions 1 and 2; a
// partitioned table is refused. Two writers may commit to one table at
// once (the loser reloads and tries again), but a full load replaces
// whatever the table held. Structs, maps and nanosecond timestamps are not
// read.
package iceberg
