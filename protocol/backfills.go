package protocol

// VerbBackfills lists the backfills the cluster keeps (the running ones
// and the newest finished ones of each pipeline).
const VerbBackfills = "backfills"

// MaxBackfills bounds the backfills one BackfillsReply lists.
const MaxBackfills = 200

// BackfillsRequest asks for the backfills, of one pipeline when Pipeline
// is set, newest first, at most Limit (0 or more than MaxBackfills:
// MaxBackfills).
type BackfillsRequest struct {
	Pipeline string `json:"pipeline,omitempty"`
	Limit    int    `json:"limit,omitempty"`
}

// BackfillsReply lists backfills, newest first. Each is a BackfillStatus
// without its windows (GET one by id for them).
type BackfillsReply struct {
	Backfills []BackfillStatus `json:"backfills"`
}
