package ledger

// PollSQL and PollBatch are what a poll runs, for the plan test.
const (
	PollSQL   = pollSQL
	PollBatch = pollBatch
)
