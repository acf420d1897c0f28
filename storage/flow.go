package storage

import (
	"context"
	"fmt"
	"time"
)

// Bounds of a Flow, checked by ValidateFlow.
const (
	// MinPriority and MaxPriority bound Flow.Priority.
	MinPriority = -1000
	MaxPriority = 1000
	// MaxConcurrency is the largest Flow.Concurrency.
	MaxConcurrency = 1 << 20
	// MaxRate is the largest Flow.Rate: a store may keep the time of each claim of a window.
	// For a higher rate use a shorter Per.
	MaxRate = 10_000
	// MinPer and MaxPer bound Flow.Per when Rate is set.
	MinPer = time.Millisecond
	MaxPer = 7 * 24 * time.Hour
	// MaxFlows is how many flows a store holds at most: every claim may look at them all.
	MaxFlows = 1000
	// FlowProbe caps the Running and Due counts of ListFlows.
	FlowProbe = 10_000
)

// Flow is the flow control stored under one key. Zero limits mean none.
type Flow struct {
	// Key is a workflow name, or the name of a group several workflow names share (the
	// rules of a workflow name, ValidateName).
	Key string
	// Priority orders claims among due workflows: higher first. MinPriority..MaxPriority.
	Priority int
	// Concurrency is the most workflows of the key running at once; 0 is no limit.
	Concurrency int
	// Rate is the most claims of the key's workflows in any window of length Per; 0 is no
	// limit.
	Rate int
	// Per is the rate's window, MinPer..MaxPer when Rate is set, zero otherwise.
	Per time.Duration
	// UpdatedAt is the Now of the PutFlow that stored it.
	UpdatedAt time.Time
}

// Limited reports whether the flow limits its workflows (a concurrency or a rate).
func (f Flow) Limited() bool { return f.Concurrency > 0 || f.Rate > 0 }

// FlowState is a stored Flow with what its key's workflows are doing, as ListFlows sees it.
type FlowState struct {
	Flow
	// Running counts the key's workflows running with a live lease (by the store's clock),
	// at most FlowProbe.
	Running int
	// Due counts the key's runnable workflows (due by ListFlows' now, idle or with an
	// expired lease), at most FlowProbe: with a limit reached, these are held back.
	Due int
	// Capped reports that a count stopped at FlowProbe: there may be more.
	Capped bool
}

// FlowController is implemented by stores that enforce flow control in Claim (every
// backend in this module). Its methods are each one statement or transaction.
type FlowController interface {
	// PutFlow stores f under f.Key with UpdatedAt = now, replacing a stored one, or, with
	// ifMissing, only when none is stored (the SDK's defaults from code: an operator's
	// change wins). It returns the flow stored after the call and whether it wrote. A new key
	// beyond MaxFlows stored flows is refused with ErrTooLarge, writing nothing. The next
	// Claim applies it.
	PutFlow(ctx context.Context, f Flow, ifMissing bool, now time.Time) (Flow, bool, error)

	// DeleteFlow removes the flow stored under key, reporting whether there was one: the
	// key's workflows then run with priority 0 and no limits.
	DeleteFlow(ctx context.Context, key string) (bool, error)

	// ListFlows returns every stored flow in key order with its Running and Due counts, due
	// meaning RunAt <= now by the caller's clock. Its cost is bounded by MaxFlows and
	// FlowProbe.
	ListFlows(ctx context.Context, now time.Time) ([]FlowState, error)
}

// ValidateFlowKey checks a flow key: the rules of a workflow name.
func ValidateFlowKey(key string) error {
	if err := ValidateName(key); err != nil {
		return fmt.Errorf("flow key: %w", err)
	}
	return nil
}

// ValidateFlow checks the input of PutFlow: the key, the priority, limits that are not
// negative and not above their maximum, a Per within MinPer..MaxPer exactly when Rate is set,
// and now.
func ValidateFlow(f Flow, now time.Time) error {
	if err := ValidateFlowKey(f.Key); err != nil {
		return err
	}
	if f.Priority < MinPriority || f.Priority > MaxPriority {
		return fmt.Errorf("%w: flow %q: priority %d must be %d..%d", ErrInvalid, f.Key, f.Priority, MinPriority, MaxPriority)
	}
	if f.Concurrency < 0 || f.Concurrency > MaxConcurrency {
		return fmt.Errorf("%w: flow %q: concurrency %d must be 0 (no limit)..%d", ErrInvalid, f.Key, f.Concurrency, MaxConcurrency)
	}
	if f.Rate < 0 || f.Rate > MaxRate {
		return fmt.Errorf("%w: flow %q: rate %d must be 0 (no limit)..%d; for a higher rate use a shorter period", ErrInvalid, f.Key, f.Rate, MaxRate)
	}
	switch {
	case f.Rate > 0 && (f.Per < MinPer || f.Per > MaxPer):
		return fmt.Errorf("%w: flow %q: rate %d per %v: the period must be %v..%v", ErrInvalid, f.Key, f.Rate, f.Per, MinPer, MaxPer)
	case f.Rate == 0 && f.Per != 0:
		return fmt.Errorf("%w: flow %q: a period (%v) without a rate", ErrInvalid, f.Key, f.Per)
	}
	return validateNow("now", now)
}

// ValidateListFlows checks the input of ListFlows: now within MinTime..MaxTime.
func ValidateListFlows(now time.Time) error { return validateNow("now", now) }

// FlowCapacity returns how many more workflows of f a claim may take: the least of limit,
// the concurrency left beside running live leases, and the rate left beside the claims made
// in the current window (inWindow). Backends that decide in Go share it.
func FlowCapacity(f Flow, limit, running, inWindow int) int {
	n := limit
	if f.Concurrency > 0 {
		n = min(n, f.Concurrency-running)
	}
	if f.Rate > 0 {
		n = min(n, f.Rate-inWindow)
	}
	return max(n, 0)
}
