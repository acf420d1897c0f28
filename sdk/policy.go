package sdk

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
	"unicode/utf8"
)

// RetryPolicy decides whether and when a failed step (or workflow run) is tried again.
// Policy and Composite implement it.
type RetryPolicy interface {
	// decide returns the budget key charged for err, the delay before the next attempt and
	// whether there is one, given the failures already charged per key (not counting err).
	decide(err error, used map[string]int) (key string, delay time.Duration, retry bool)
	validate() error
}

// Policy is a retry policy: up to MaxAttempts executions in all (the first one included),
// with delay min(Cap, Base·2^(n−1)) before retry n, and with Jitter the delay d becomes
// d/2 + rand(0..d/2). RetryOn, when set, limits the policy to errors it accepts; an error it
// rejects is not retried. Name keys the attempt budget, which is stored with the step: it is
// required inside a Composite, and at most MaxUserName bytes of valid UTF-8.
type Policy struct {
	Name        string
	MaxAttempts int
	Base        time.Duration
	Cap         time.Duration
	Jitter      bool
	RetryOn     func(error) bool
}

// Defaults: a step gets 3 attempts with delays from 1 s capped at 30 s; a workflow function
// gets 10 attempts capped at 10 minutes.
var (
	DefaultStepPolicy     = Policy{Name: "default", MaxAttempts: 3, Base: time.Second, Cap: 30 * time.Second, Jitter: true}
	DefaultWorkflowPolicy = Policy{Name: "default", MaxAttempts: 10, Base: time.Second, Cap: 10 * time.Minute, Jitter: true}
)

// NoRetry is a policy that never retries.
var NoRetry = Policy{Name: "none", MaxAttempts: 1}

func (p Policy) key() string {
	if p.Name == "" {
		return "default"
	}
	return p.Name
}

func (p Policy) matches(err error) bool { return p.RetryOn == nil || p.RetryOn(err) }

// Delay returns the delay before retry n (n >= 1) without jitter.
func (p Policy) Delay(n int) time.Duration {
	if p.Base <= 0 || n < 1 {
		return 0
	}
	d := p.Base
	for i := 1; i < n; i++ {
		if p.Cap > 0 && d >= p.Cap {
			break
		}
		if d > time.Duration(1<<62)/2 {
			break
		}
		d *= 2
	}
	if p.Cap > 0 && d > p.Cap {
		d = p.Cap
	}
	return d
}

func (p Policy) delayFor(n int) time.Duration {
	d := p.Delay(n)
	if p.Jitter && d > 1 {
		d = d/2 + rand.N(d/2+1)
	}
	return d
}

func (p Policy) decide(err error, used map[string]int) (string, time.Duration, bool) {
	k := p.key()
	if IsPermanent(err) || !p.matches(err) {
		return k, 0, false
	}
	n := used[k] + 1 // failures under this policy including err
	if n >= p.MaxAttempts {
		return k, 0, false
	}
	return k, p.delayFor(n), true
}

func (p Policy) validate() error {
	// The name is a key of the budgets stored as JSON in the step record: invalid UTF-8 would
	// come back as another key (a budget that never runs out), and a long one would outgrow
	// the record.
	if len(p.Name) > MaxUserName || !utf8.ValidString(p.Name) {
		return fmt.Errorf("%w: retry policy name %.32q... must be at most %d bytes of UTF-8", ErrInvalid, p.Name, MaxUserName)
	}
	if p.MaxAttempts < 1 {
		return fmt.Errorf("%w: retry policy %q: MaxAttempts %d must be at least 1", ErrInvalid, p.key(), p.MaxAttempts)
	}
	if p.Base < 0 || p.Cap < 0 {
		return fmt.Errorf("%w: retry policy %q: negative Base or Cap", ErrInvalid, p.key())
	}
	return nil
}

// Composite is an ordered list of policies: the first whose RetryOn accepts an error decides,
// and each keeps its own attempt budget keyed by its Name (so reordering or inserting
// policies in a deploy does not shift budgets). An error no policy accepts is not retried.
type Composite []Policy

func (c Composite) decide(err error, used map[string]int) (string, time.Duration, bool) {
	for _, p := range c {
		if p.matches(err) {
			return p.decide(err, used)
		}
	}
	return "unmatched", 0, false
}

func (c Composite) validate() error {
	if len(c) == 0 {
		return fmt.Errorf("%w: composite retry policy is empty", ErrInvalid)
	}
	seen := map[string]bool{}
	for i, p := range c {
		if p.Name == "" {
			return fmt.Errorf("%w: composite retry policy entry %d has no Name; budgets are keyed by name", ErrInvalid, i)
		}
		if seen[p.Name] {
			return fmt.Errorf("%w: composite retry policy names %q twice", ErrInvalid, p.Name)
		}
		seen[p.Name] = true
		if err := p.validate(); err != nil {
			return err
		}
	}
	return nil
}

// RetryOnErrors returns a matcher for Policy.RetryOn accepting errors that errors.Is any
// of targets.
func RetryOnErrors(targets ...error) func(error) bool {
	return func(err error) bool {
		for _, t := range targets {
			if errors.Is(err, t) {
				return true
			}
		}
		return false
	}
}
