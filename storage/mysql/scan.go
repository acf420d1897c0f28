package mysql

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Times cross the wire as text in UTC ("2006-01-02 15:04:05.000000") and are read back from
// either text or a time.Time, so the driver's parseTime and loc settings and the session's
// time_zone change nothing. DATETIME(6) keeps microseconds: finer times are truncated.

const timeLayout = "2006-01-02 15:04:05.000000"

// DATETIME holds the years 1000..9999, which contain storage.MinTime..storage.MaxTime, the
// only times the contract lets in: no range check of its own is needed.

// ts is the SQL of a time parameter: the text is cast so that expressions such as LEAST and
// IF compare times, not strings.
const ts = "CAST(? AS DATETIME(6))"

// dbTime is the parameter for t: NULL for the zero time, else its UTC text.
func dbTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(timeLayout)
}

// micro returns t as the store keeps it: UTC, truncated to the microsecond, without a
// monotonic reading, so a time computed here equals the same time read back.
func micro(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// timeScanner reads a nullable DATETIME column into *t (the zero time for NULL).
type timeScanner struct{ t *time.Time }

func (s timeScanner) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*s.t = time.Time{}
		return nil
	case time.Time:
		// parseTime=true: the driver read the wall clock in its loc; the wall clock is UTC.
		*s.t = time.Date(v.Year(), v.Month(), v.Day(), v.Hour(), v.Minute(), v.Second(), v.Nanosecond(), time.UTC)
		return nil
	case []byte:
		return s.parse(string(v))
	case string:
		return s.parse(v)
	}
	return fmt.Errorf("mysql: cannot read a time from %T", src)
}

func (s timeScanner) parse(v string) error {
	if v == "" || strings.HasPrefix(v, "0000-00-00") {
		*s.t = time.Time{}
		return nil
	}
	t, err := time.ParseInLocation("2006-01-02 15:04:05.999999", v, time.UTC)
	if err != nil {
		return fmt.Errorf("mysql: read time %q: %w", v, err)
	}
	*s.t = t
	return nil
}

// nt returns a scanner for a nullable time column.
func nt(t *time.Time) timeScanner { return timeScanner{t} }

// bstr is a parameter for a VARBINARY column: []byte is sent as _binary'...', so the bytes
// are stored as given whatever the connection's character set.
func bstr(s string) []byte {
	if s == "" {
		return []byte{}
	}
	return []byte(s)
}

// nullStr is NULL for "", the bytes of s otherwise: a flow key, whose NULL means none.
func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// nullID is NULL for 0, the id otherwise.
func nullID(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}

// Column lists. The same order is used by every query that reads the row and by the scan
// functions below.
const (
	workflowColumns = "id, name, `key`, input, output, state, `values`, run_at, wait_kind, wait_step, wait_data, " +
		"lease_owner, lease_until, lease_token, attempt, parent_step_id, trace_context, last_error, " +
		"created_at, updated_at, finished_at, tags, flow"
	workflowColumnCount = 23
	stepColumns         = "workflow_id, id, name, state, attempts, result, meta, last_error, created_at, updated_at, completed_at"
	stepColumnCount     = 11
)

// workflowRow holds the scan targets of one workflow row. Every target accepts NULL, so the
// same targets read the workflow part of Load's union, which is NULL in step rows.
type workflowRow struct {
	w                                   storage.Workflow
	id, leaseToken, attempt, parent     sql.NullInt64
	name, key, state, kind, step, owner []byte
	lastError, flow                     []byte
}

func (r *workflowRow) targets() []any {
	w := &r.w
	return []any{&r.id, &r.name, &r.key, &w.Input, &w.Output, &r.state, &w.Values, nt(&w.RunAt),
		&r.kind, &r.step, &w.Wait.Data, &r.owner, nt(&w.LeaseUntil), &r.leaseToken,
		&r.attempt, &r.parent, &w.TraceContext, &r.lastError, nt(&w.CreatedAt), nt(&w.UpdatedAt),
		nt(&w.FinishedAt), tagsScanner{&w.Tags}, &r.flow}
}

func (r *workflowRow) workflow() storage.Workflow {
	w := r.w
	w.ID = r.id.Int64
	w.Name = string(r.name)
	w.Key = string(r.key)
	w.State = storage.State(r.state)
	w.Wait.Kind = storage.WaitKind(r.kind)
	w.Wait.Step = string(r.step)
	w.LeaseOwner = string(r.owner)
	w.LeaseToken = r.leaseToken.Int64
	w.Attempt = int(r.attempt.Int64)
	w.ParentStepID = r.parent.Int64
	w.LastError = string(r.lastError)
	w.Flow = string(r.flow)
	return w
}

// stepRow holds the scan targets of one step row; like workflowRow, every target accepts NULL.
type stepRow struct {
	s                        storage.Step
	workflowID, id, attempts sql.NullInt64
	name, state, lastError   []byte
}

func (r *stepRow) targets() []any {
	s := &r.s
	return []any{&r.workflowID, &r.id, &r.name, &r.state, &r.attempts, &s.Result, &s.Meta, &r.lastError,
		nt(&s.CreatedAt), nt(&s.UpdatedAt), nt(&s.CompletedAt)}
}

func (r *stepRow) step() storage.Step {
	s := r.s
	s.WorkflowID = r.workflowID.Int64
	s.ID = r.id.Int64
	s.Name = string(r.name)
	s.State = storage.StepState(r.state)
	s.Attempts = int(r.attempts.Int64)
	s.LastError = string(r.lastError)
	return s
}

// scanWorkflows reads every row of rows as a workflow and closes rows.
func scanWorkflows(rows *sql.Rows) ([]storage.Workflow, error) {
	defer rows.Close()
	var out []storage.Workflow
	for rows.Next() {
		var r workflowRow
		if err := rows.Scan(r.targets()...); err != nil {
			return nil, err
		}
		out = append(out, r.workflow())
	}
	return out, rows.Err()
}

// Tags are stored as one JSON object of strings, NULL when there are none. jsonText writes
// the same bytes for the same map every time (keys sorted, no HTML escaping), which matters
// on MariaDB: its JSON_CONTAINS compares strings as their JSON text, so the filter of
// ListWorkflows is encoded the same way as the stored tags.

// tagsSQL is the SQL of a tags parameter: its bytes are sent as binary, like every string
// of the backend, and read as utf8mb4 text (JSON needs a character set), whatever the
// connection's character set.
const tagsSQL = "CONVERT(? USING utf8mb4)"

// encodeTags is the parameter of tagsSQL for the tags column: NULL for none (nil or empty),
// else the JSON object's text.
func encodeTags(tags map[string]string) any {
	if len(tags) == 0 {
		return nil
	}
	return jsonText(tags)
}

// jsonText is the JSON text of tags, for tagsSQL. A map of strings always encodes (invalid
// UTF-8 would be replaced, but tags were validated).
func jsonText(tags map[string]string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(tags); err != nil {
		panic(fmt.Sprintf("mysql: encode tags: %v", err)) // unreachable for map[string]string
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// tagsScanner reads the tags column into *m: nil for NULL or an empty object.
type tagsScanner struct{ m *map[string]string }

func (s tagsScanner) Scan(src any) error {
	var text []byte
	switch v := src.(type) {
	case nil:
		*s.m = nil
		return nil
	case []byte:
		text = v
	case string:
		text = []byte(v)
	default:
		return fmt.Errorf("mysql: cannot read tags from %T", src)
	}
	var m map[string]string
	if err := json.Unmarshal(text, &m); err != nil {
		return fmt.Errorf("mysql: read tags %.64q: %w", text, err)
	}
	if len(m) == 0 {
		m = nil
	}
	*s.m = m
	return nil
}

// cloneTags copies tags for a workflow returned to the caller; none (nil or empty) is nil.
func cloneTags(tags map[string]string) map[string]string {
	if len(tags) == 0 {
		return nil
	}
	return maps.Clone(tags)
}

// tagsSize is about the bytes tags take in a statement, for splitting multi-row inserts.
func tagsSize(tags map[string]string) int {
	n := 0
	for k, v := range tags {
		n += len(k) + len(v) + 6
	}
	return n
}
