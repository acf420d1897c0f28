package mysql

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// flowReload is how often Claim reloads the flow cache at most: the longest a flow key's
// first workflows created by another process wait before this process claims them, and the
// longest this process keeps sending the claims of a key another process limited down the
// fast path (where the key's workflows are not claimed until the cache learns the limit).
const flowReload = time.Second

// flowCache is what a store knows of the flows table and the flow_names pairs. It decides
// how Claim runs, never what Claim may take: the statements themselves read the flows table
// (see Claim), so a stale cache can delay claims of a key, never break its limits.
type flowCache struct {
	mu     sync.Mutex
	loaded time.Time
	// pairs maps a workflow name to the flow keys its workflows were created with, as stored
	// in flow_names: a pair here is known to be stored there.
	pairs map[string]map[string]struct{}
	// flows holds the stored flows by key.
	flows map[string]storage.Flow
}

// flowPair is one (workflow name, flow key) pair of flow_names.
type flowPair struct{ name, key string }

// plan returns the pairs of names (every pair when names is empty) sorted by key and name,
// and the keys among them whose cached flow is limited, sorted.
func (c *flowCache) plan(names []string) (pairs []flowPair, limited []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	add := func(name string) {
		for key := range c.pairs[name] {
			pairs = append(pairs, flowPair{name, key})
		}
	}
	if len(names) == 0 {
		for name := range c.pairs {
			add(name)
		}
	} else {
		for _, name := range names {
			add(name)
		}
	}
	slices.SortFunc(pairs, comparePairs)
	for i, p := range pairs {
		if (i == 0 || pairs[i-1].key != p.key) && c.flows[p.key].Limited() {
			limited = append(limited, p.key)
		}
	}
	return pairs, limited
}

func comparePairs(a, b flowPair) int {
	if c := strings.Compare(a.key, b.key); c != 0 {
		return c
	}
	return strings.Compare(a.name, b.name)
}

// unknown returns the distinct pairs of ws with a flow key that the cache does not know to
// be stored.
func (c *flowCache) unknown(ws []storage.NewWorkflow) []flowPair {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []flowPair
	for _, w := range ws {
		if w.Flow == "" {
			continue
		}
		if _, ok := c.pairs[w.Name][w.Flow]; ok {
			continue
		}
		p := flowPair{w.Name, w.Flow}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// addPairs records pairs now stored in flow_names.
func (c *flowCache) addPairs(pairs []flowPair) {
	if len(pairs) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addPairsLocked(pairs)
}

func (c *flowCache) addPairsLocked(pairs []flowPair) {
	if c.pairs == nil {
		c.pairs = map[string]map[string]struct{}{}
	}
	for _, p := range pairs {
		keys := c.pairs[p.name]
		if keys == nil {
			keys = map[string]struct{}{}
			c.pairs[p.name] = keys
		}
		keys[p.key] = struct{}{}
	}
}

// setFlow records f as stored under key, or no flow when f is nil.
func (c *flowCache) setFlow(key string, f *storage.Flow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flows == nil {
		c.flows = map[string]storage.Flow{}
	}
	if f == nil {
		delete(c.flows, key)
	} else {
		c.flows[key] = *f
	}
}

// stale reports whether the cache is due for a reload: never loaded, or loaded longer ago
// than every (0: never again).
func (c *flowCache) stale(every time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loaded.IsZero() || (every > 0 && time.Since(c.loaded) >= every)
}

// reloadFlows replaces the cache with the flows and pairs stored, read by one query.
func (s *Store) reloadFlows(ctx context.Context) error {
	var (
		pairs []flowPair
		flows = map[string]storage.Flow{}
	)
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		pairs, flows = pairs[:0], map[string]storage.Flow{}
		rows, err := s.db.QueryContext(ctx, s.q.loadFlows)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				kind          int
				a, b          []byte
				p, c, r, perU int64
			)
			if err := rows.Scan(&kind, &a, &b, &p, &c, &r, &perU); err != nil {
				return err
			}
			if kind == 0 {
				pairs = append(pairs, flowPair{string(a), string(b)})
			} else {
				flows[string(a)] = storage.Flow{Key: string(a), Priority: int(p), Concurrency: int(c), Rate: int(r), Per: time.Duration(perU) * time.Microsecond}
			}
		}
		return rows.Err()
	})
	if err != nil {
		return fmt.Errorf("load the flows: %w", err)
	}
	c := &s.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	// Pairs are never deleted, so the ones this store inserted meanwhile stay.
	c.addPairsLocked(pairs)
	c.flows = flows
	c.loaded = time.Now()
	return nil
}

// pairsInsert is the INSERT IGNORE of pairs into flow_names (existing pairs are skipped).
func (s *Store) pairsInsert(pairs []flowPair) statement {
	args := make([]any, 0, 2*len(pairs))
	for _, p := range pairs {
		args = append(args, bstr(p.name), bstr(p.key))
	}
	return statement{"INSERT IGNORE INTO " + s.flowNames + " (name, flow) VALUES " + rowsSQL(len(pairs), "?, ?"), args}
}

// flowColumns are the columns of a flows row that make a storage.Flow, read by scanFlow.
const flowColumns = "`key`, priority, concurrency, rate, per_us, updated_at"

// scanFlow reads the flowColumns of one row, then extra.
func scanFlow(scan func(...any) error, extra ...any) (storage.Flow, error) {
	var (
		f     storage.Flow
		key   []byte
		perUs int64
	)
	err := scan(append([]any{&key, &f.Priority, &f.Concurrency, &f.Rate, &perUs, nt(&f.UpdatedAt)}, extra...)...)
	f.Key = string(key)
	f.Per = time.Duration(perUs) * time.Microsecond
	return f, err
}

// PutFlow stores f under f.Key (see storage.FlowController) in one transaction: the key's
// row is locked, then replaced or kept; a new key is counted against storage.MaxFlows under
// a shared lock of the whole table, so concurrent PutFlows of new keys cannot pass the bound
// together. A rate window of past claims stays while the flow keeps a rate.
func (s *Store) PutFlow(ctx context.Context, f storage.Flow, ifMissing bool, now time.Time) (storage.Flow, bool, error) {
	if err := storage.ValidateFlow(f, now); err != nil {
		return storage.Flow{}, false, err
	}
	if err := s.ready(ctx); err != nil {
		return storage.Flow{}, false, err
	}
	f.UpdatedAt = micro(now)
	// Kept in whole microseconds, like every time of the backend (MinPer is a whole number).
	f.Per = f.Per.Truncate(time.Microsecond)
	var (
		out   storage.Flow
		wrote bool
	)
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		stored, err := scanFlow(tx.QueryRowContext(ctx, "SELECT "+flowColumns+" FROM "+s.flows+" WHERE `key` = ? FOR UPDATE", bstr(f.Key)).Scan)
		switch {
		case err == nil && ifMissing:
			out, wrote = stored, false
			return nil
		case err == nil:
			_, err = tx.ExecContext(ctx, "UPDATE "+s.flows+" SET priority = ?, concurrency = ?, rate = ?, per_us = ?,"+
				" claim_log = IF(? = 0, NULL, claim_log), updated_at = "+ts+" WHERE `key` = ?",
				f.Priority, f.Concurrency, f.Rate, f.Per.Microseconds(), f.Rate, dbTime(f.UpdatedAt), bstr(f.Key))
		case errors.Is(err, sql.ErrNoRows):
			var n int
			if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+s.flows+" LOCK IN SHARE MODE").Scan(&n); err != nil {
				return err
			}
			if n >= storage.MaxFlows {
				return fmt.Errorf("%w: the store holds %d flows already", storage.ErrTooLarge, storage.MaxFlows)
			}
			_, err = tx.ExecContext(ctx, "INSERT INTO "+s.flows+" (`key`, priority, concurrency, rate, per_us, updated_at) VALUES (?, ?, ?, ?, ?, "+ts+")",
				bstr(f.Key), f.Priority, f.Concurrency, f.Rate, f.Per.Microseconds(), dbTime(f.UpdatedAt))
		}
		if err != nil {
			return err
		}
		out, wrote = f, true
		return nil
	})
	if err != nil {
		return storage.Flow{}, false, fmt.Errorf("mysql: put flow %q: %w", f.Key, err)
	}
	s.cache.setFlow(out.Key, &out)
	return out, wrote, nil
}

// DeleteFlow removes the flow stored under key with one DELETE.
func (s *Store) DeleteFlow(ctx context.Context, key string) (bool, error) {
	if err := storage.ValidateFlowKey(key); err != nil {
		return false, err
	}
	if err := s.ready(ctx); err != nil {
		return false, err
	}
	var gone bool
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		res, err := s.db.ExecContext(ctx, "DELETE FROM "+s.flows+" WHERE `key` = ?", bstr(key))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		// A second attempt after a lost reply finds nothing: it was there the first time.
		gone = gone || n > 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("mysql: delete flow %q: %w", key, err)
	}
	s.cache.setFlow(key, nil)
	return gone, nil
}

// ListFlows returns every stored flow in key order with its counts, in one transaction of
// two queries: the flows with their names (flow_names), then one statement of capped counts,
// per flow the live leases of its `flow_running` range and per name the due rows of its
// `flow_claim` range, each a derived table that stops at storage.FlowProbe.
func (s *Store) ListFlows(ctx context.Context, now time.Time) ([]storage.FlowState, error) {
	if err := storage.ValidateListFlows(now); err != nil {
		return nil, err
	}
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	var out []storage.FlowState
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		out = out[:0]
		rows, err := tx.QueryContext(ctx, "SELECT f.`key`, f.priority, f.concurrency, f.rate, f.per_us, f.updated_at, n.name FROM "+
			s.flows+" AS f LEFT JOIN "+s.flowNames+" AS n ON n.flow = f.`key` ORDER BY f.`key`, n.name")
		if err != nil {
			return err
		}
		var names [][]string
		for rows.Next() {
			var name []byte
			f, err := scanFlow(rows.Scan, &name)
			if err != nil {
				rows.Close()
				return err
			}
			if len(out) == 0 || out[len(out)-1].Key != f.Key {
				out = append(out, storage.FlowState{Flow: f})
				names = append(names, nil)
			}
			if name != nil {
				names[len(names)-1] = append(names[len(names)-1], string(name))
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(out) == 0 {
			return err
		}
		var (
			b    strings.Builder
			args []any
		)
		for i, st := range out {
			if i > 0 {
				b.WriteString(" UNION ALL ")
			}
			fmt.Fprintf(&b, "(SELECT 0 AS kind, %d AS i, COUNT(*) AS n FROM (SELECT 1 FROM %s FORCE INDEX (flow_running)"+
				" WHERE flow = ? AND running_until > "+storeNow+" LIMIT ?) AS r%d)", i, s.workflows, i)
			args = append(args, bstr(st.Key), storage.FlowProbe)
			for j, name := range names[i] {
				fmt.Fprintf(&b, " UNION ALL (SELECT 1, %d, COUNT(*) FROM (SELECT 1 FROM %s FORCE INDEX (flow_claim)"+
					" WHERE flow = ? AND name = ? AND flow_at <= "+ts+" AND "+runnableSQL+" LIMIT ?) AS d%d_%d)", i, s.workflows, i, j)
				args = append(args, bstr(st.Key), bstr(name), dbTime(micro(now)), storage.FlowProbe)
			}
		}
		rows, err = tx.QueryContext(ctx, b.String(), args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var kind, i, n int
			if err := rows.Scan(&kind, &i, &n); err != nil {
				return err
			}
			if kind == 0 {
				out[i].Running = n
			} else {
				out[i].Due = min(out[i].Due+n, storage.FlowProbe)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("mysql: list flows: %w", err)
	}
	for i := range out {
		out[i].Capped = out[i].Running == storage.FlowProbe || out[i].Due == storage.FlowProbe
	}
	return out, nil
}

// claimLog is a flow's rate window as stored in claim_log: [Unix microseconds by the
// server's clock, claims at that time] pairs, oldest first.
type claimLog [][2]int64

// parseClaimLog reads a stored claim_log (NULL: empty).
func parseClaimLog(b []byte) (claimLog, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var l claimLog
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("read claim_log %q: %w", b, err)
	}
	return l, nil
}

// window drops the entries that left the window of length per ending at now and returns the
// rest with the claims they count.
func (l claimLog) window(now time.Time, per time.Duration) (claimLog, int) {
	from := now.Add(-per).UnixMicro()
	i := 0
	for i < len(l) && l[i][0] <= from {
		i++
	}
	l = l[i:]
	n := 0
	for _, e := range l {
		n += int(e[1])
	}
	return l, n
}
