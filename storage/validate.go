package storage

import (
	"fmt"
	"math"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits every backend enforces. They are part of the contract so that a workflow valid on
// one backend is valid on all of them.
const (
	// MaxNameLen is the longest workflow or step name, in bytes.
	MaxNameLen = 128
	// MaxKeyLen is the longest workflow key, in bytes (child keys concatenate parent key,
	// branch and item key, so it is generous).
	MaxKeyLen = 512
	// MaxPayload is the largest input, output or step result, in bytes.
	MaxPayload = 4 << 20
	// MaxValues is the largest durable-values object, in bytes.
	MaxValues = 1 << 20
	// MaxMeta is the largest step metadata, in bytes.
	MaxMeta = 64 << 10
	// MaxErrorText is the longest error message or error snapshot stored, in bytes.
	MaxErrorText = 64 << 10
	// MaxErrorName is the longest Step and Type of an error record, in bytes. Both are
	// names (a step record's name, a Go type's name), not free text, so they share one limit:
	// twice MaxNameLen leaves room for long generic type names.
	MaxErrorName = 2 * MaxNameLen
	// MaxOwnerLen is the longest lease owner, in bytes.
	MaxOwnerLen = 128
	// MaxLeaseTTL is the longest lease a Claim or Heartbeat may ask for. A lease's expiry is
	// the store's clock plus the TTL, which validation cannot see, so the bound is on the TTL:
	// a year is far beyond any sensible lease and keeps every expiry within MaxTime.
	MaxLeaseTTL = 366 * 24 * time.Hour
	// MaxClaim is the most workflows one Claim may take.
	MaxClaim = 1000
	// MaxSpawnBatch is the most children one SpawnBatch may insert.
	MaxSpawnBatch = 5000
	// MaxCountCap is the largest cap of CountChildren.
	MaxCountCap = 5000
	// MaxAttempt is the largest attempt count of a workflow, step or error record: the
	// largest value of a 32-bit integer column, the narrowest any backend uses.
	MaxAttempt = math.MaxInt32
)

// The range of times every backend accepts. It is the strictest range any backend needs
// (the embedded store keeps times as Unix nanoseconds, which reach from 1677 to 2262; MySQL's
// DATETIME(6) and PostgreSQL's timestamptz hold far more), so a workflow valid on one backend
// is valid on all of them. A time passed in outside it is refused with ErrInvalid.
var (
	// MinTime is the earliest time accepted: the start of 1678, UTC.
	MinTime = time.Date(1678, time.January, 1, 0, 0, 0, 0, time.UTC)
	// MaxTime is the latest time accepted: the end of 2261, UTC.
	MaxTime = time.Date(2261, time.December, 31, 23, 59, 59, 999999999, time.UTC)
)

// ValidateName checks a workflow name: 1..MaxNameLen bytes of UTF-8 with no control
// characters and no '$' (reserved for names the system derives).
func ValidateName(name string) error {
	if err := validateText("workflow name", name, MaxNameLen); err != nil {
		return err
	}
	for _, r := range name {
		if r == '$' {
			return fmt.Errorf("%w: workflow name %q contains '$', which is reserved", ErrInvalid, name)
		}
	}
	return nil
}

// ValidateStepName checks a step record name: like ValidateName, but '$' is allowed because
// the SDK derives record names such as "sleep$<name>".
func ValidateStepName(name string) error {
	return validateText("step name", name, MaxNameLen)
}

// ValidateKey checks a workflow key: 1..MaxKeyLen bytes of UTF-8 with no control characters.
func ValidateKey(key string) error {
	return validateText("workflow key", key, MaxKeyLen)
}

func validateText(what, s string, max int) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	}
	if len(s) > max {
		return fmt.Errorf("%w: %s %.32q... is %d bytes, longer than %d", ErrInvalid, what, s, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s %q is not valid UTF-8", ErrInvalid, what, s)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: %s %q contains a control character", ErrInvalid, what, s)
		}
	}
	return nil
}

// ValidateTime checks a time passed in where the zero time means "none": it accepts the zero
// time and any time within MinTime..MaxTime. what names the time in the error.
func ValidateTime(what string, t time.Time) error {
	if t.IsZero() || (!t.Before(MinTime) && !t.After(MaxTime)) {
		return nil
	}
	return fmt.Errorf("%w: %s %v is outside %d..%d, the years every backend can hold", ErrInvalid, what, t, MinTime.Year(), MaxTime.Year())
}

// validateNow checks a time that must be given (a request's now, a wake time, a cutoff): not
// zero, and within MinTime..MaxTime.
func validateNow(what string, t time.Time) error {
	if t.IsZero() {
		return fmt.Errorf("%w: %s is zero", ErrInvalid, what)
	}
	return ValidateTime(what, t)
}

// validateAttempt checks an attempt count: 0..MaxAttempt.
func validateAttempt(what string, n int) error {
	if n < 0 || n > MaxAttempt {
		return fmt.Errorf("%w: %s %d is outside 0..%d", ErrInvalid, what, n, MaxAttempt)
	}
	return nil
}

// ValidateLease checks the lease a fenced write (Heartbeat, SaveSteps, FinishRun, Release,
// SpawnBatch) is made under: it must name a workflow. Whether it is still the workflow's
// lease is the fence's business, not validation's.
func ValidateLease(l Lease) error {
	if l.WorkflowID <= 0 {
		return fmt.Errorf("%w: lease has workflow id %d", ErrInvalid, l.WorkflowID)
	}
	return nil
}

// ValidateFind checks the input of FindWorkflow: a valid workflow name and key.
func ValidateFind(name, key string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	return ValidateKey(key)
}

// ValidateNew checks the input of CreateWorkflow: name, key, payload sizes, Now (given and in
// range), RunAt (zero or in range) and ParentStepID (not negative).
func ValidateNew(w NewWorkflow) error {
	if err := ValidateName(w.Name); err != nil {
		return err
	}
	if err := ValidateKey(w.Key); err != nil {
		return err
	}
	if len(w.Input) > MaxPayload {
		return fmt.Errorf("%w: input of workflow %q key %q is %d bytes, more than %d", ErrTooLarge, w.Name, w.Key, len(w.Input), MaxPayload)
	}
	if len(w.TraceContext) > MaxMeta {
		return fmt.Errorf("%w: trace context is %d bytes, more than %d", ErrTooLarge, len(w.TraceContext), MaxMeta)
	}
	if err := validateNow("now", w.Now); err != nil {
		return err
	}
	if err := ValidateTime("run time", w.RunAt); err != nil {
		return err
	}
	if w.ParentStepID < 0 {
		return fmt.Errorf("%w: negative parent step id %d", ErrInvalid, w.ParentStepID)
	}
	if w.Flow != "" {
		if err := ValidateFlowKey(w.Flow); err != nil {
			return fmt.Errorf("workflow %q key %q: %w", w.Name, w.Key, err)
		}
	}
	return ValidateTags(w.Tags)
}

// ValidateClaim checks the input of Claim: the owner, the limit, a TTL of 1ns..MaxLeaseTTL,
// and Now given and such that the RunAt the claim stores, Now+TTL, is within MinTime..MaxTime.
func ValidateClaim(r ClaimRequest) error {
	if r.Owner == "" || len(r.Owner) > MaxOwnerLen {
		return fmt.Errorf("%w: lease owner %q must be 1..%d bytes", ErrInvalid, r.Owner, MaxOwnerLen)
	}
	if r.Limit < 1 || r.Limit > MaxClaim {
		return fmt.Errorf("%w: claim limit %d must be 1..%d", ErrInvalid, r.Limit, MaxClaim)
	}
	return validateTTL(r.TTL, r.Now)
}

// ValidateHeartbeat checks the input of Heartbeat: a lease naming a workflow, a TTL of
// 1ns..MaxLeaseTTL, and now given and such that the RunAt the heartbeat stores, now+ttl, is
// within MinTime..MaxTime.
func ValidateHeartbeat(l Lease, ttl time.Duration, now time.Time) error {
	if err := ValidateLease(l); err != nil {
		return err
	}
	return validateTTL(ttl, now)
}

// validateTTL checks the TTL of a claim or heartbeat made at now.
func validateTTL(ttl time.Duration, now time.Time) error {
	if ttl <= 0 || ttl > MaxLeaseTTL {
		return fmt.Errorf("%w: lease TTL %v must be positive and at most %v", ErrInvalid, ttl, MaxLeaseTTL)
	}
	if err := validateNow("now", now); err != nil {
		return err
	}
	if runAt := now.Add(ttl); ValidateTime("run time", runAt) != nil {
		return fmt.Errorf("%w: lease TTL %v from %v ends after %v", ErrInvalid, ttl, now, MaxTime)
	}
	return nil
}

// ValidateRelease checks the input of Release: a lease naming a workflow and now given and in
// range.
func ValidateRelease(l Lease, now time.Time) error {
	if err := ValidateLease(l); err != nil {
		return err
	}
	return validateNow("now", now)
}

// ValidateCommit checks the records of a Commit: Now given and in range, the step records
// (see ValidateSteps), the durable values' size, and each error record's sizes, attempt and
// creation time.
func ValidateCommit(c Commit) error {
	if err := validateNow("now", c.Now); err != nil {
		return err
	}
	if err := ValidateSteps(c.Steps); err != nil {
		return err
	}
	if len(c.Values) > MaxValues {
		return fmt.Errorf("%w: durable values are %d bytes, more than %d", ErrTooLarge, len(c.Values), MaxValues)
	}
	for _, e := range c.Errors {
		if err := validateErrorRecord(e); err != nil {
			return err
		}
	}
	return nil
}

func validateErrorRecord(e ErrorRecord) error {
	switch {
	case len(e.Step) > MaxErrorName:
		return fmt.Errorf("%w: error record names a step %.32q... of %d bytes, more than %d", ErrTooLarge, e.Step, len(e.Step), MaxErrorName)
	case len(e.Type) > MaxErrorName:
		return fmt.Errorf("%w: type of error record for step %q is %d bytes, more than %d", ErrTooLarge, e.Step, len(e.Type), MaxErrorName)
	case len(e.Message) > MaxErrorText:
		return fmt.Errorf("%w: message of error record for step %q is %d bytes, more than %d", ErrTooLarge, e.Step, len(e.Message), MaxErrorText)
	case len(e.Values) > MaxErrorText:
		return fmt.Errorf("%w: values snapshot of error record for step %q is %d bytes, more than %d", ErrTooLarge, e.Step, len(e.Values), MaxErrorText)
	}
	if err := validateAttempt(fmt.Sprintf("attempt of error record for step %q", e.Step), e.Attempt); err != nil {
		return err
	}
	return ValidateTime(fmt.Sprintf("created time of error record for step %q", e.Step), e.CreatedAt)
}

// ValidateSteps checks step records before they are written: name, state, sizes, attempts
// and times.
func ValidateSteps(steps []Step) error {
	for _, s := range steps {
		if err := ValidateStepName(s.Name); err != nil {
			return err
		}
		if !s.State.Valid() {
			return fmt.Errorf("%w: step %q has unknown state %q", ErrInvalid, s.Name, s.State)
		}
		if len(s.Result) > MaxPayload {
			return fmt.Errorf("%w: result of step %q is %d bytes, more than %d", ErrTooLarge, s.Name, len(s.Result), MaxPayload)
		}
		if len(s.Meta) > MaxMeta {
			return fmt.Errorf("%w: metadata of step %q is %d bytes, more than %d", ErrTooLarge, s.Name, len(s.Meta), MaxMeta)
		}
		if len(s.LastError) > MaxErrorText {
			return fmt.Errorf("%w: last error of step %q is %d bytes, more than %d", ErrTooLarge, s.Name, len(s.LastError), MaxErrorText)
		}
		if err := validateAttempt(fmt.Sprintf("attempts of step %q", s.Name), s.Attempts); err != nil {
			return err
		}
		if err := ValidateTime(fmt.Sprintf("created time of step %q", s.Name), s.CreatedAt); err != nil {
			return err
		}
		if err := ValidateTime(fmt.Sprintf("completed time of step %q", s.Name), s.CompletedAt); err != nil {
			return err
		}
	}
	return nil
}

// ValidateFinish checks the input of FinishRun: the commit (see ValidateCommit), the final
// state, the wait's sizes, the output's size, RunAt (zero or in range) and the attempt.
func ValidateFinish(f Finish) error {
	if err := ValidateCommit(f.Commit); err != nil {
		return err
	}
	switch f.State {
	case StateIdle, StateCompleted, StateFailed, StateStalled:
	default:
		return fmt.Errorf("%w: a run cannot finish in state %q", ErrInvalid, f.State)
	}
	switch {
	case len(f.Wait.Data) > MaxMeta:
		return fmt.Errorf("%w: wait data is %d bytes, more than %d", ErrTooLarge, len(f.Wait.Data), MaxMeta)
	case len(f.Wait.Kind) > MaxNameLen:
		return fmt.Errorf("%w: wait kind %.32q... is %d bytes, more than %d", ErrTooLarge, f.Wait.Kind, len(f.Wait.Kind), MaxNameLen)
	case len(f.Wait.Step) > MaxNameLen:
		return fmt.Errorf("%w: wait step %.32q... is %d bytes, more than %d", ErrTooLarge, f.Wait.Step, len(f.Wait.Step), MaxNameLen)
	}
	if len(f.Output) > MaxPayload {
		return fmt.Errorf("%w: output is %d bytes, more than %d", ErrTooLarge, len(f.Output), MaxPayload)
	}
	if err := ValidateTime("run time", f.RunAt); err != nil {
		return err
	}
	return validateAttempt("workflow attempt", f.Attempt)
}

// ValidateWake checks the input of Wake: the wake time is given and in range.
func ValidateWake(at time.Time) error {
	return validateNow("wake time", at)
}

// ValidateRetry checks the input of Retry: Now given and in range, and the step records (see
// ValidateSteps).
func ValidateRetry(r RetryRequest) error {
	if err := validateNow("now", r.Now); err != nil {
		return err
	}
	return ValidateSteps(r.Steps)
}

// ValidateCancel checks the input of Cancel: now is given and in range.
func ValidateCancel(now time.Time) error {
	return validateNow("now", now)
}

// ValidateList checks the input of ListWorkflows: a name, when given, is a valid workflow
// name, every state is a defined one and ParentStepID is not negative. DueBy is a bound, not
// a time to store, so any value is accepted; see DueByBound.
func ValidateList(f ListFilter) error {
	if f.Name != "" {
		if err := ValidateName(f.Name); err != nil {
			return err
		}
	}
	for _, st := range f.States {
		if !st.Valid() {
			return fmt.Errorf("%w: list filter has unknown state %q", ErrInvalid, st)
		}
	}
	if f.ParentStepID < 0 {
		return fmt.Errorf("%w: list filter has negative parent step id %d", ErrInvalid, f.ParentStepID)
	}
	if err := ValidateTags(f.Tags); err != nil {
		return fmt.Errorf("list filter: %w", err)
	}
	if f.KeyPrefix != "" {
		if f.Name == "" {
			return fmt.Errorf("%w: list filter has a key prefix %q without a name (the index on name and key serves it)", ErrInvalid, f.KeyPrefix)
		}
		if err := validateText("list filter key prefix", f.KeyPrefix, MaxKeyLen); err != nil {
			return err
		}
	}
	return nil
}

// DueByBound turns ListFilter.DueBy into the bound a backend compares stored RunAt values
// with, so that every backend answers the same for a DueBy outside MinTime..MaxTime: one
// after MaxTime selects what MaxTime selects (every stored time is at most MaxTime), and for
// one before MinTime ok is false, as nothing stored can be due by then. The zero time (no
// filter) stays zero.
func DueByBound(dueBy time.Time) (bound time.Time, ok bool) {
	switch {
	case dueBy.IsZero():
		return time.Time{}, true
	case dueBy.Before(MinTime):
		return time.Time{}, false
	case dueBy.After(MaxTime):
		return MaxTime, true
	}
	return dueBy, true
}

// ValidateCleanup checks the input of DeleteFinished: the cutoff Before is given and in
// range, and States holds final states only.
func ValidateCleanup(r CleanupRequest) error {
	for _, st := range r.States {
		if !st.Final() {
			return fmt.Errorf("%w: cleanup state %q is not final", ErrInvalid, st)
		}
	}
	return validateNow("cleanup cutoff", r.Before)
}

// Truncate shortens s to at most n bytes on a rune boundary, for error text kept in records.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Earliest returns the earlier of two times where the zero time means "never".
func Earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero():
		return a
	case b.Before(a):
		return b
	}
	return a
}

// ValidateSpawn checks the input of SpawnBatch: Now given and in range, the branch name, the
// batch size, the step records (see ValidateSteps) and every child as CreateWorkflow would
// (its ParentStepID is ignored, as SpawnBatch sets it).
func ValidateSpawn(r SpawnRequest) error {
	if err := validateNow("now", r.Now); err != nil {
		return err
	}
	if err := ValidateStepName(r.Branch); err != nil {
		return fmt.Errorf("branch: %w", err)
	}
	if len(r.Children) > MaxSpawnBatch {
		return fmt.Errorf("%w: %d children in one batch, more than %d", ErrInvalid, len(r.Children), MaxSpawnBatch)
	}
	if err := ValidateSteps(r.Steps); err != nil {
		return err
	}
	for i, c := range r.Children {
		c.Now, c.ParentStepID = r.Now, 0
		if err := ValidateNew(c); err != nil {
			return fmt.Errorf("child %d (%q key %.32q): %w", i, c.Name, c.Key, err)
		}
	}
	return nil
}

// ValidateChildQuery checks the input of CountChildren.
func ValidateChildQuery(q ChildQuery) error {
	if len(q.StepIDs) == 0 || len(q.States) == 0 {
		return fmt.Errorf("%w: a child count needs step IDs and states", ErrInvalid)
	}
	if q.Cap < 1 || q.Cap > MaxCountCap {
		return fmt.Errorf("%w: count cap %d must be 1..%d", ErrInvalid, q.Cap, MaxCountCap)
	}
	for _, id := range q.StepIDs {
		if id <= 0 {
			return fmt.Errorf("%w: branch step ID %d must be positive", ErrInvalid, id)
		}
	}
	for _, st := range q.States {
		if !st.Valid() {
			return fmt.Errorf("%w: unknown state %q", ErrInvalid, st)
		}
	}
	return nil
}

// ValidateRunEnds checks what FinishRuns needs of the call as a whole: no two ends for one
// workflow. Each end is checked on its own, as FinishRun checks it, with ValidateLease and
// ValidateFinish, and a bad one is refused alone.
func ValidateRunEnds(ends []RunEnd) error {
	seen := make(map[int64]bool, len(ends))
	for _, e := range ends {
		if seen[e.Lease.WorkflowID] {
			return fmt.Errorf("%w: two run ends for workflow %d in one FinishRuns", ErrInvalid, e.Lease.WorkflowID)
		}
		seen[e.Lease.WorkflowID] = true
	}
	return nil
}
