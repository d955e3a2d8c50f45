// Package contract provides data contracts: what a pipeline may copy of
// each column of its rows, and how. A contract classifies every column
// (pii: email) with an action (keep, drop, hash, mask, null, truncate,
// tokenize), may filter rows, and in strict mode fails closed: a column it
// does not classify stops the task with an error naming the column instead
// of being copied.
//
// A Spec is the contract as a pipeline spec holds it (Parse reads it from
// YAML with the line of every problem; it travels as JSON with its key
// still a ${NAME} reference). Compile reads the key from the environment
// of the process that transforms rows, a worker: the transformation runs
// there, between the read and the write (Writer for the batches of a run,
// Events for the events a cdc_apply pipeline applies, Stream for the
// change events a CDC reader encodes), so no original value of a column
// the contract transforms reaches a stream, a staging place, a dead
// letter, a log line or a trace. Errors name the row's position and the
// column, never a value.
package contract
