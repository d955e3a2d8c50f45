package connectors

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/protocol"
)

// The capabilities of compaction and vacuum, beside the Sink contract. A
// compaction goes through the machinery of every run: the coordinator
// leader plans it (PlanCompaction: bounded rewrite groups, one task each),
// workers rewrite the groups (Rewrite, a task that may run twice), and the
// leader commits the run once (CommitCompaction), or aborts it (the Sink's
// Abort removes what its tasks staged). The leader asks a sink for these
// capabilities; it never asks what kind the sink is.

// CompactSettings are the settings of a compaction (the compact section
// of a compact pipeline's spec).
type CompactSettings = protocol.CompactSettings

// Compactor is implemented by sinks whose datasets can be compacted:
// small files of one partition rewritten into fewer, larger ones and
// swapped in atomically, without losing or doubling a row.
//
// PlanCompaction and CommitCompaction are called by the coordinator leader
// only; Rewrite by workers, concurrently for different groups, and again
// for a retried task. The leader serialises a dataset's commits,
// rollbacks, compactions and vacuums (by Dataset), so CommitCompaction
// never runs beside a Commit or an Expose of the same dataset from this
// cluster; writers outside the cluster (another engine appending to a
// table, a cdc_apply applier writing late events into a closed hour) may
// still run, and a commit must not lose what they wrote.
type Compactor interface {
	// Dataset names the dataset the sink's configuration writes, the same
	// for every configuration that writes it (a directory, a catalog's
	// table), so that the leader can serialise what changes it. It holds
	// no secret. It does no I/O.
	Dataset() string
	// PlanCompaction lists the rewrite groups of the dataset: small files
	// of one partition, a group bounded by req.Settings.TargetFileBytes of
	// input. A partition still being written (a change log hour not
	// closed) or younger than MinAge is left alone. Each group is a
	// partition of the run (its Spec opaque to all but the sink, its Key
	// naming the dataset's partition, its Bytes the input size). No group
	// is an empty plan. ctx bounds the planning; it only reads.
	PlanCompaction(ctx context.Context, req CompactRequest) (CompactPlan, error)
	// Rewrite rewrites one group into the run's staging place and reports
	// it: Rows and Checksum of the rows (which must be those of the
	// group's files, checked before Rewrite returns), Bytes written, and
	// Location for CommitCompaction. A group whose files changed or went
	// since the plan fails with a Replan error: the leader plans the run
	// again. Another attempt of the same task replaces what an earlier
	// one staged. ctx bounds the rewrite.
	Rewrite(ctx context.Context, t TaskRef, group protocol.Partition) (TaskOutput, error)
	// CommitCompaction swaps the rewritten groups in for the files they
	// replace, atomically for each partition of the dataset, and for all
	// partitions in one step where the format allows it (for a table
	// format, all groups in one commit; for a files dataset, one switch
	// manifest): a reader sees the partition's old files or its new ones,
	// never both nor a part. It checks, before the
	// swap, that each partition's rewritten rows are the rows it replaces
	// (count and checksum). A group that can no longer be swapped in (its
	// files were replaced meanwhile by another writer) is left out, its
	// staged output removed; a commit that loses a race with another
	// writer is tried again on the new state, keeping what that writer
	// committed. Replaced files stay readable until a vacuum removes them
	// (CompactSettings.Retention). A commit repeated after a crash, with
	// the same request, succeeds and changes nothing more.
	CommitCompaction(ctx context.Context, req CompactCommit) (CompactResult, error)
}

// CompactRequest describes the compaction run a Compactor plans.
type CompactRequest struct {
	RunID    string
	Pipeline string
	// Settings are the compaction's, defaults filled in.
	Settings CompactSettings
	// Now is the leader's clock, for MinAge.
	Now time.Time
}

// CompactPlan is what a Compactor plans for a run.
type CompactPlan struct {
	// Groups are the rewrite groups, one task each.
	Groups []protocol.Partition
	// Files counts the files of the groups, per group.
	Files []int
}

// CompactCommit asks a Compactor to swap a run's rewritten groups in.
type CompactCommit struct {
	RunID    string
	Pipeline string
	// Groups are the run's groups, in task order, each with what its task
	// staged.
	Groups []CompactedGroup
	// Settings are the run's compaction settings, defaults filled in.
	Settings CompactSettings
}

// CompactedGroup is one rewrite group and its task's output.
type CompactedGroup struct {
	Group  protocol.Partition
	Output TaskOutput
}

// CompactResult tells what a compaction commit swapped in.
type CompactResult struct {
	// Location is where readers find the dataset.
	Location string
	// Partitions swapped, and the files they held before and after.
	Partitions  int
	FilesBefore int64
	FilesAfter  int64
	// Skipped names the groups left out (replaced meanwhile), with why.
	Skipped []string
}

// Vacuumer is implemented by sinks that can remove what no reader of their
// dataset needs any more: staging that failed or abandoned runs left (task
// outputs, staging tables written by a task that ran late), files a
// compaction replaced or snapshots older than the retention, versions
// beyond keep_versions, and orphan files no version references. It never
// removes what a rollback may expose (a kept version), nor anything of a
// run in flight. Only the coordinator leader calls it, serialised with the
// dataset's commits and rollbacks; ctx bounds the call.
type Vacuumer interface {
	Vacuum(ctx context.Context, req VacuumRequest) (VacuumReport, error)
}

// VacuumRequest describes one vacuum.
type VacuumRequest struct {
	Pipeline string
	// Settings are the retention settings, defaults filled in:
	// Retention, KeepVersions (0: the sink's keep_versions) and OrphanAge.
	Settings CompactSettings
	// DryRun lists what would go and removes nothing.
	DryRun bool
	// Now is the leader's clock.
	Now time.Time
	// Active returns the IDs of the runs in flight that write the dataset:
	// their staging is never touched. Call it after listing what may go,
	// so that a run that started meanwhile is among them.
	Active func(ctx context.Context) ([]string, error)
}

// VacuumItem is one thing a vacuum removes.
type VacuumItem = protocol.VacuumItem

// VacuumReport tells what a vacuum removed (or, dry, would remove) and
// which versions it kept for rollback.
type VacuumReport struct {
	Removed []VacuumItem
	Kept    []Version
}

// PackGroups splits items of the given sizes, kept in order, into the
// fewest groups of about target bytes each (ceil(total/target) groups),
// balanced by size: item i goes to the group its position in the running
// total falls in. A group holds at least one item; an item larger than
// the target is a group of its own share. It returns the groups' item
// indices.
func PackGroups(sizes []int64, target int64) [][]int {
	var total int64
	for _, s := range sizes {
		total += s
	}
	if len(sizes) == 0 {
		return nil
	}
	n := int64(1)
	if target > 0 && total > target {
		n = (total + target - 1) / target
	}
	n = min(n, int64(len(sizes)))
	groups := make([][]int, 0, n)
	var before int64
	for i, s := range sizes {
		g := int64(0)
		if total > 0 {
			// The group of the item's middle byte.
			g = min((before+s/2)*n/total, n-1)
		}
		for int64(len(groups)) <= g {
			groups = append(groups, nil)
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], i)
		before += s
	}
	return groups
}
