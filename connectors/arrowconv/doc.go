// Package arrowconv converts a dataset's typed schema (protocol.Schema,
// as a source's catalog declares it) into an Apache Arrow schema, and rows
// in text (CSV records and JSON lines, values in PostgreSQL's text forms
// and the usual ones of files) into Arrow records of that schema, exactly:
// a numeric(38,10) becomes a 128-bit decimal with its digits, a
// timestamptz a UTC timestamp in microseconds, NaN and infinities stay
// floats, bytea in hex becomes bytes, an array a list; a value the column
// cannot hold is refused with the row and the column named, never
// rounded or guessed. Sinks that write typed files (Parquet for Iceberg
// tables and datasets) build their records with it (Builder), with the
// Parquet writer settings it chooses per column (WriterProperties) and
// memory it recycles (Allocator).
//
// It also gives every typed value one JSON form (see RowRenderer), which
// typed JSON lines hold: rendered from Arrow records, or converted
// straight from CSV records (Lines), the same line for the same row
// either way.
package arrowconv
