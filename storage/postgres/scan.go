package postgres

import (
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/chronoforge/chronoforge/storage"
)

// Conversions between the contract's records and SQL values.

// workflowRow receives the columns of workflowColumns.
type workflowRow struct {
	w                                             storage.Workflow
	state                                         string
	runAt, leaseUntil, created, updated, finished pgtype.Timestamptz
	parent                                        pgtype.Int8
	attempt                                       int32
	tags                                          []byte // jsonb; nil when none
	flow                                          pgtype.Text
}

// dest returns the scan destinations in workflowColumns order.
func (r *workflowRow) dest() []any {
	return []any{
		&r.w.ID, &r.w.Name, &r.w.Key, &r.w.Input, &r.w.Output, &r.state, &r.w.Values, &r.runAt,
		&r.w.Wait.Kind, &r.w.Wait.Step, &r.w.Wait.Data, &r.w.LeaseOwner, &r.leaseUntil,
		&r.w.LeaseToken, &r.attempt, &r.parent, &r.w.TraceContext, &r.w.LastError, &r.created, &r.updated,
		&r.finished, &r.tags, &r.flow,
	}
}

// workflow converts the scanned row. Tags the store wrote itself always decode; a row
// whose tags column holds anything but a JSON object of strings (edited by hand) is
// returned without tags rather than failing every read of it.
func (r *workflowRow) workflow() storage.Workflow {
	w := r.w
	w.State = storage.State(r.state)
	w.RunAt = fromTS(r.runAt)
	w.LeaseUntil = fromTS(r.leaseUntil)
	w.Attempt = int(r.attempt)
	if r.parent.Valid {
		w.ParentStepID = r.parent.Int64
	}
	w.CreatedAt = fromTS(r.created)
	w.UpdatedAt = fromTS(r.updated)
	w.FinishedAt = fromTS(r.finished)
	w.Tags = decodeTags(r.tags)
	w.Flow = r.flow.String
	return w
}

// decodeTags decodes a tags column: nil for NULL, an empty object or anything that is not
// a JSON object of strings.
func decodeTags(raw []byte) map[string]string {
	if len(raw) == 0 {
		return nil
	}
	var tags map[string]string
	if err := json.Unmarshal(raw, &tags); err != nil || len(tags) == 0 {
		return nil
	}
	return tags
}

// encodeTags is the text of a tags parameter, cast to jsonb by the statement: "" (stored
// as NULL) for none. Tags are validated strings, so marshalling cannot fail.
func encodeTags(tags map[string]string) string {
	if len(tags) == 0 {
		return ""
	}
	b, _ := json.Marshal(tags)
	return string(b)
}

// stepRow receives the columns of stepColumns.
type stepRow struct {
	s                           storage.Step
	state                       string
	attempts                    int32
	created, updated, completed pgtype.Timestamptz
}

func (r *stepRow) dest() []any {
	return []any{
		&r.s.WorkflowID, &r.s.ID, &r.s.Name, &r.state, &r.attempts, &r.s.Result, &r.s.Meta,
		&r.s.LastError, &r.created, &r.updated, &r.completed,
	}
}

func (r *stepRow) step() storage.Step {
	s := r.s
	s.State = storage.StepState(r.state)
	s.Attempts = int(r.attempts)
	s.CreatedAt = fromTS(r.created)
	s.UpdatedAt = fromTS(r.updated)
	s.CompletedAt = fromTS(r.completed)
	return s
}

// scanWorkflows collects every row of a query over workflowColumns (after skip leading
// columns, which are discarded).
func scanWorkflows(rows pgx.Rows, skip int) ([]storage.Workflow, error) {
	defer rows.Close()
	var out []storage.Workflow
	var r workflowRow
	dest := append(make([]any, skip), r.dest()...)
	for rows.Next() {
		r = workflowRow{}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		out = append(out, r.workflow())
	}
	return out, rows.Err()
}

// ts converts a time for a timestamptz parameter; the zero time is NULL ("none").
func ts(t time.Time) pgtype.Timestamptz {
	if t.IsZero() {
		return pgtype.Timestamptz{}
	}
	return pgtype.Timestamptz{Time: t, Valid: true}
}

// interval is a lease TTL as an interval parameter, rounded up to the microsecond the
// database keeps, so a lease is never shorter than asked for (nor empty).
func interval(d time.Duration) pgtype.Interval {
	return pgtype.Interval{Microseconds: int64((d + time.Microsecond - 1) / time.Microsecond), Valid: true}
}

// fromTS converts a scanned timestamptz; NULL is the zero time. Times come back in UTC.
func fromTS(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

// The contract's times (storage.MinTime..storage.MaxTime, years 1678..2261) are well inside
// what timestamptz holds and pgx encodes, and its attempt counts (storage.MaxAttempt) fit the
// integer columns, so this store adds no range checks of its own.

// text makes free text storable in a text column: PostgreSQL refuses NUL bytes and invalid
// UTF-8 there, and an error message may hold either.
func text(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// stepArgs sets the array parameters of upsertSteps. A name given twice is written once, at
// its first position, with the content of its last occurrence, as writing them one by one
// would leave it.
func stepArgs(args pgx.StrictNamedArgs, steps []storage.Step) {
	pos := make(map[string]int, len(steps))
	merged := make([]storage.Step, 0, len(steps))
	for _, s := range steps {
		i, seen := pos[s.Name]
		if !seen {
			pos[s.Name] = len(merged)
			merged = append(merged, s)
			continue
		}
		first := merged[i]
		if s.CreatedAt.IsZero() {
			s.CreatedAt = first.CreatedAt
		}
		if s.CompletedAt.IsZero() && s.State == storage.StepCompleted {
			s.CompletedAt = first.CompletedAt
		}
		merged[i] = s
	}
	n := len(merged)
	names, states, errs := make([]string, n), make([]string, n), make([]string, n)
	attempts := make([]int32, n)
	results, metas := make([][]byte, n), make([][]byte, n)
	created, completed := make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n)
	for i, s := range merged {
		names[i], states[i], errs[i] = s.Name, string(s.State), text(s.LastError)
		attempts[i] = int32(s.Attempts)
		results[i], metas[i] = s.Result, s.Meta
		created[i], completed[i] = ts(s.CreatedAt), ts(s.CompletedAt)
	}
	args["step_names"], args["step_states"], args["step_attempts"] = names, states, attempts
	args["step_results"], args["step_metas"], args["step_errors"] = results, metas, errs
	args["step_created"], args["step_completed"] = created, completed
}

// errorArgs sets the array parameters of insertErrors and the workflow's new last error
// (nil: unchanged).
func errorArgs(args pgx.StrictNamedArgs, recs []storage.ErrorRecord) {
	n := len(recs)
	steps, types, msgs := make([]string, n), make([]string, n), make([]string, n)
	attempts := make([]int32, n)
	values := make([][]byte, n)
	created := make([]pgtype.Timestamptz, n)
	for i, e := range recs {
		steps[i], types[i], msgs[i] = text(e.Step), text(e.Type), text(e.Message)
		attempts[i] = int32(e.Attempt)
		values[i] = e.Values
		created[i] = ts(e.CreatedAt)
	}
	args["err_steps"], args["err_attempts"], args["err_types"] = steps, attempts, types
	args["err_messages"], args["err_values"], args["err_created"] = msgs, values, created
	var last *string
	if n > 0 {
		last = &msgs[n-1]
	}
	args["last_error"] = last
}

// commitArgs are the parameters of a fenced write of c under l.
func commitArgs(l storage.Lease, c storage.Commit) pgx.StrictNamedArgs {
	args := leaseArgs(l, c.Now)
	args["values"] = c.Values
	stepArgs(args, c.Steps)
	errorArgs(args, c.Errors)
	return args
}

func leaseArgs(l storage.Lease, now time.Time) pgx.StrictNamedArgs {
	return pgx.StrictNamedArgs{"id": l.WorkflowID, "token": l.Token, "now": ts(now)}
}
