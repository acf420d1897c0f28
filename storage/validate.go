package storage

import (
	"fmt"
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
	// MaxOwnerLen is the longest lease owner, in bytes.
	MaxOwnerLen = 128
	// MaxClaim is the most workflows one Claim may take.
	MaxClaim = 1000
	// MaxSpawnBatch is the most children one SpawnBatch may insert.
	MaxSpawnBatch = 5000
	// MaxCountCap is the largest cap of CountChildren.
	MaxCountCap = 5000
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

// ValidateNew checks the input of CreateWorkflow.
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
	if w.Now.IsZero() {
		return fmt.Errorf("%w: Now is zero", ErrInvalid)
	}
	return nil
}

// ValidateClaim checks the input of Claim.
func ValidateClaim(r ClaimRequest) error {
	if r.Owner == "" || len(r.Owner) > MaxOwnerLen {
		return fmt.Errorf("%w: lease owner %q must be 1..%d bytes", ErrInvalid, r.Owner, MaxOwnerLen)
	}
	if r.Limit < 1 || r.Limit > MaxClaim {
		return fmt.Errorf("%w: claim limit %d must be 1..%d", ErrInvalid, r.Limit, MaxClaim)
	}
	if r.TTL <= 0 {
		return fmt.Errorf("%w: lease TTL %v must be positive", ErrInvalid, r.TTL)
	}
	if r.Now.IsZero() {
		return fmt.Errorf("%w: Now is zero", ErrInvalid)
	}
	return nil
}

// ValidateCommit checks the records of a Commit.
func ValidateCommit(c Commit) error {
	if c.Now.IsZero() {
		return fmt.Errorf("%w: Now is zero", ErrInvalid)
	}
	if err := ValidateSteps(c.Steps); err != nil {
		return err
	}
	if len(c.Values) > MaxValues {
		return fmt.Errorf("%w: durable values are %d bytes, more than %d", ErrTooLarge, len(c.Values), MaxValues)
	}
	for _, e := range c.Errors {
		if len(e.Message) > MaxErrorText || len(e.Values) > MaxErrorText || len(e.Type) > MaxNameLen*2 {
			return fmt.Errorf("%w: error record for step %q is too large", ErrTooLarge, e.Step)
		}
	}
	return nil
}

// ValidateSteps checks step records before they are written.
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
	}
	return nil
}

// ValidateFinish checks the input of FinishRun.
func ValidateFinish(f Finish) error {
	if err := ValidateCommit(f.Commit); err != nil {
		return err
	}
	switch f.State {
	case StateIdle, StateCompleted, StateFailed, StateStalled:
	default:
		return fmt.Errorf("%w: a run cannot finish in state %q", ErrInvalid, f.State)
	}
	if len(f.Wait.Data) > MaxMeta || len(f.Wait.Kind) > MaxNameLen || len(f.Wait.Step) > MaxNameLen {
		return fmt.Errorf("%w: wait of %d bytes of data is too large", ErrTooLarge, len(f.Wait.Data))
	}
	if len(f.Output) > MaxPayload {
		return fmt.Errorf("%w: output is %d bytes, more than %d", ErrTooLarge, len(f.Output), MaxPayload)
	}
	return nil
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

// ClampLimit returns limit, or def when limit is not positive, and never more than max.
func ClampLimit(limit, def, max int) int {
	if limit <= 0 {
		return def
	}
	return min(limit, max)
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

// ValidateSpawn checks the input of SpawnBatch.
func ValidateSpawn(r SpawnRequest) error {
	if r.Now.IsZero() {
		return fmt.Errorf("%w: Now is zero", ErrInvalid)
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
	for _, c := range r.Children {
		c.Now = r.Now
		if err := ValidateNew(c); err != nil {
			return fmt.Errorf("child: %w", err)
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
