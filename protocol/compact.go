package protocol

import "time"

// Compaction and vacuum. A run of a compact pipeline (or a compaction of
// another pipeline's dataset, `sluice compact <pipeline>`) is planned by
// the leader into rewrite groups, one task each, rewritten by workers and
// committed by the leader as one replacement; a vacuum removes what no
// reader needs any more, never a version a rollback may expose.

// VerbCompact starts a compaction (or, with DryRun, only plans one);
// VerbVacuum vacuums a pipeline's dataset.
const (
	VerbCompact = "compact"
	VerbVacuum  = "vacuum"
)

// CompactSettings are the settings of a compact pipeline's spec (its
// compact section). Zero values mean the defaults (DefaultTargetFileBytes
// and the others below).
type CompactSettings struct {
	// TargetFileBytes is the size the rewritten files aim at: small files
	// of one partition are grouped into rewrite tasks of about this much
	// input, each written as one file.
	TargetFileBytes int64 `json:"target_file_bytes,omitempty"`
	// MinFiles is how many small files (smaller than half the target) a
	// partition needs before it is compacted.
	MinFiles int `json:"min_files,omitempty"`
	// MinAge keeps a partition out of compaction until its newest file is
	// this old: data still being read right after it landed is left alone.
	MinAge time.Duration `json:"min_age,omitempty"`
	// Retention is how long what a compaction replaced (files, snapshots,
	// directories) stays readable before a vacuum removes it.
	Retention time.Duration `json:"retention,omitempty"`
	// KeepVersions is how many versions a vacuum keeps whatever their age
	// (0: the sink's keep_versions).
	KeepVersions int `json:"keep_versions,omitempty"`
	// OrphanAge is the safety age of files no version references (orphans
	// of runs that died): younger ones may still be part of a commit.
	OrphanAge time.Duration `json:"orphan_age,omitempty"`
	// Vacuum, when false, keeps a compaction run from vacuuming the
	// dataset after its commit; nil or true vacuums.
	Vacuum *bool `json:"vacuum,omitempty"`
}

// The defaults of CompactSettings.
const (
	DefaultTargetFileBytes = 256 << 20
	DefaultMinFiles        = 2
	DefaultRetention       = 7 * 24 * time.Hour
	DefaultOrphanAge       = 24 * time.Hour
)

// WithDefaults returns s with every zero field set to its default.
func (s CompactSettings) WithDefaults() CompactSettings {
	if s.TargetFileBytes <= 0 {
		s.TargetFileBytes = DefaultTargetFileBytes
	}
	if s.MinFiles <= 0 {
		s.MinFiles = DefaultMinFiles
	}
	if s.Retention <= 0 {
		s.Retention = DefaultRetention
	}
	if s.OrphanAge <= 0 {
		s.OrphanAge = DefaultOrphanAge
	}
	return s
}

// VacuumAfter reports whether a compaction run vacuums after its commit.
func (s CompactSettings) VacuumAfter() bool { return s.Vacuum == nil || *s.Vacuum }

// CompactRequest asks for a compaction of a pipeline's dataset: a run of a
// compact pipeline, or for another pipeline a compaction of the dataset
// its sink writes, with default settings. DryRun only plans it: the reply
// lists the groups and no run starts.
type CompactRequest struct {
	Pipeline string `json:"pipeline"`
	DryRun   bool   `json:"dry_run,omitempty"`
	// RequestID makes the request idempotent: the same id gives the same
	// run.
	RequestID string `json:"request_id,omitempty"`
}

// CompactReply tells what a compaction is (or, dry, would be): its run,
// and the groups its plan rewrites.
type CompactReply struct {
	Pipeline string `json:"pipeline"`
	// RunID is the run started; empty for a dry run or when the dataset
	// has nothing to compact.
	RunID string `json:"run,omitempty"`
	// Dataset names what is compacted (a directory, a table).
	Dataset string `json:"dataset,omitempty"`
	// Groups are the rewrite groups, one task each.
	Groups []CompactGroup `json:"groups"`
}

// CompactGroup is one rewrite group of a compaction plan.
type CompactGroup struct {
	// Key names the group: its partition and its number.
	Key   string `json:"key"`
	Files int    `json:"files"`
	Bytes int64  `json:"bytes"`
}

// VacuumRequest asks the leader to vacuum a pipeline's dataset: for a
// compact pipeline with its compact settings, for another pipeline with
// the defaults. DryRun lists what would go and removes nothing.
type VacuumRequest struct {
	Pipeline string `json:"pipeline"`
	DryRun   bool   `json:"dry_run,omitempty"`
}

// VacuumReply lists what a vacuum removed (or, dry, would remove), and
// the versions it kept for rollback.
type VacuumReply struct {
	Pipeline string `json:"pipeline"`
	DryRun   bool   `json:"dry_run,omitempty"`
	// Removed are the items removed, each with its size.
	Removed []VacuumItem `json:"removed"`
	// Bytes and Files total Removed.
	Bytes int64 `json:"bytes"`
	Files int64 `json:"files"`
	// Kept are the versions a rollback may still expose: none of them is
	// touched.
	Kept []DatasetVersion `json:"kept,omitempty"`
}

// VacuumItem is one thing a vacuum removes: a directory, a file, a
// snapshot, a staging table.
type VacuumItem struct {
	// Path names it: a directory or file, "snapshot <id>", a table.
	Path string `json:"path"`
	// Why says what it is: "staging of run r (not running)", "version 3
	// beyond keep_versions", "replaced by compaction c, 8d ago".
	Why   string `json:"why"`
	Files int64  `json:"files,omitempty"`
	Bytes int64  `json:"bytes"`
}
