package mysql

import (
	"fmt"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Checks this backend adds to the ones in storage/validate.go, the same ones the embedded
// backend makes, with DATETIME's range (years 1000..9999) instead of Unix nanoseconds'.

// checkTime accepts the zero time (meaning "none") and any time DATETIME can hold.
func checkTime(what string, t time.Time) error {
	if t.IsZero() || (!t.Before(minTime) && !t.After(maxTime)) {
		return nil
	}
	return fmt.Errorf("%w: %s %v is outside the years 1000..9999 this store can hold", storage.ErrInvalid, what, t)
}

// checkNow rejects a zero or unrepresentable current time.
func checkNow(what string, t time.Time) error {
	if t.IsZero() {
		return fmt.Errorf("%w: %s is zero", storage.ErrInvalid, what)
	}
	return checkTime(what, t)
}

func checkCommitTimes(c storage.Commit) error {
	if err := checkNow("now", c.Now); err != nil {
		return err
	}
	for _, s := range c.Steps {
		if err := checkStepTimes(s); err != nil {
			return err
		}
	}
	for _, e := range c.Errors {
		if err := checkTime("created time of error record", e.CreatedAt); err != nil {
			return err
		}
		if e.Attempt < 0 {
			return fmt.Errorf("%w: error record for step %q has negative attempt %d", storage.ErrInvalid, e.Step, e.Attempt)
		}
		if len(e.Step) > storage.MaxErrorText {
			return fmt.Errorf("%w: error record names a step of %d bytes", storage.ErrTooLarge, len(e.Step))
		}
	}
	return nil
}

func checkStepTimes(s storage.Step) error {
	if err := checkTime(fmt.Sprintf("created time of step %q", s.Name), s.CreatedAt); err != nil {
		return err
	}
	if err := checkTime(fmt.Sprintf("completed time of step %q", s.Name), s.CompletedAt); err != nil {
		return err
	}
	if s.Attempts < 0 {
		return fmt.Errorf("%w: step %q has negative attempts %d", storage.ErrInvalid, s.Name, s.Attempts)
	}
	return nil
}

func checkLease(l storage.Lease) error {
	if l.WorkflowID <= 0 {
		return fmt.Errorf("%w: lease has workflow id %d", storage.ErrInvalid, l.WorkflowID)
	}
	return nil
}

func checkWait(w storage.Wait) error {
	if len(w.Kind) > storage.MaxNameLen || len(w.Step) > storage.MaxNameLen {
		return fmt.Errorf("%w: wait kind %.32q or step %.32q is longer than %d bytes", storage.ErrInvalid, w.Kind, w.Step, storage.MaxNameLen)
	}
	return nil
}
