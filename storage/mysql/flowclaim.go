package mysql

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// lockedFlow is a flows row a limited claim locked: the flow, and its rate window.
type lockedFlow struct {
	f   storage.Flow
	log claimLog
	// room is how many more of the key's workflows the claim may take; taken, how many it did.
	room, taken int
}

// candidate is a due row a limited claim read and locked, and may take.
type candidate struct {
	id    int64
	runAt time.Time
	flow  string
	prio  int
}

// claimLimited is Claim when flows with a limit govern workflows of names (the keys limited,
// as the cache sees them): one transaction of a fixed number of statements, however many
// workflows it takes and however many keys are involved:
//
//  1. SELECT ... FOR UPDATE of the limited keys' flows rows, in key order: every claim of a
//     limited key, in any process, waits here for the one before it to commit, and reads
//     the limits as they are now (a key no longer stored or limited is treated as such).
//  2. One query of the server's clock and, per key with a concurrency, the count of its
//     running rows with a live lease (a range of flow_running, stopped at the limit). It is
//     the transaction's first consistent read, so its snapshot is taken after the locks were
//     granted: it sees every run that a claim before this one committed.
//  3. One SELECT of the candidates: the first due rows without a flow (r.Limit of each
//     name), of each pair of a limited key as many as the key's room (FlowCapacity: the
//     concurrency left, the rate left in the window), of each other pair r.Limit, each pick
//     locked with FOR UPDATE SKIP LOCKED, with their flow's priority. Go takes the first
//     r.Limit by priority, RunAt and ID, at most the room of each limited key.
//  4. One UPDATE that leases them, tagged with a nonce, checking again that each row is
//     runnable and that a key not locked here is not limited (see notLimited).
//  5. One UPDATE of the rate windows of the rate-limited keys that took workflows: the
//     entries that left the window dropped, one entry of the clock of step 2 added.
//  6. One SELECT of the leased rows by nonce.
//
// Steps 4 to 6 are skipped when there is nothing to take. A deadlock or lost connection
// before the COMMIT rolls it all back and the transaction runs again (inTx).
func (s *Store) claimLimited(ctx context.Context, r storage.ClaimRequest, names []string, pairs []flowPair, limited []string, now, runAt time.Time) ([]storage.Workflow, error) {
	var out []storage.Workflow
	var seen map[string]*lockedFlow
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		out = nil
		locked, err := s.lockFlows(ctx, tx, limited)
		if err != nil {
			return err
		}
		seen = locked
		clock, err := s.flowRoom(ctx, tx, r.Limit, limited, locked)
		if err != nil {
			return err
		}
		cands, err := s.candidates(ctx, tx, r, names, pairs, locked, now)
		if err != nil {
			return err
		}
		taken := pickCandidates(cands, r.Limit, locked)
		if len(taken) == 0 {
			return nil
		}
		nonce := rand.Int64N(math.MaxInt64-1) + 1
		// Only the rows of keys whose flows row this transaction holds pass without the check
		// of notLimited: a key found missing holds no lock here (at READ COMMITTED not even a
		// gap's), and a PutFlow may have stored it since.
		held := slices.Sorted(maps.Keys(locked))
		if err := s.leaseTaken(ctx, tx, r, taken, held, now, runAt, nonce); err != nil {
			return err
		}
		if err := s.logClaims(ctx, tx, limited, locked, clock); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, s.q.claimed, dbTime(runAt), nonce)
		if err != nil {
			return err
		}
		got, err := scanWorkflows(rows)
		if err != nil {
			return err
		}
		byID := make(map[int64]storage.Workflow, len(got))
		for _, w := range got {
			byID[w.ID] = w
		}
		for _, c := range taken {
			if w, ok := byID[c.id]; ok {
				out = append(out, w)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// What the locks read is the flows table as it is: the cache learns it for free.
	for _, key := range limited {
		if lf := seen[key]; lf != nil {
			s.cache.setFlow(key, &lf.f)
		} else {
			s.cache.setFlow(key, nil)
		}
	}
	return out, nil
}

// lockFlows locks the flows rows of keys (sorted) and reads them with their rate windows.
func (s *Store) lockFlows(ctx context.Context, tx *sql.Tx, keys []string) (map[string]*lockedFlow, error) {
	args := make([]any, len(keys))
	for i, k := range keys {
		args[i] = bstr(k)
	}
	rows, err := tx.QueryContext(ctx, "SELECT "+flowColumns+", claim_log FROM "+s.flows+
		" WHERE `key` IN ("+placeholders(len(keys))+") ORDER BY `key` FOR UPDATE", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string]*lockedFlow, len(keys))
	for rows.Next() {
		var raw []byte
		f, err := scanFlow(rows.Scan, &raw)
		if err != nil {
			return nil, err
		}
		log, err := parseClaimLog(raw)
		if err != nil {
			return nil, err
		}
		out[f.Key] = &lockedFlow{f: f, log: log}
	}
	return out, rows.Err()
}

// flowRoom reads the server's clock and the live leases of the locked keys with a
// concurrency, in one query, and sets each locked key's room. It returns the clock.
func (s *Store) flowRoom(ctx context.Context, tx *sql.Tx, limit int, keys []string, locked map[string]*lockedFlow) (time.Time, error) {
	var (
		b    strings.Builder
		args []any
	)
	for i, key := range keys {
		lf := locked[key]
		if lf == nil || lf.f.Concurrency == 0 {
			continue
		}
		if len(args) > 0 {
			b.WriteString(" UNION ALL ")
		}
		fmt.Fprintf(&b, "(SELECT %d AS i, COUNT(*) AS n, %s FROM (SELECT 1 FROM %s FORCE INDEX (flow_running)"+
			" WHERE flow = ? AND running_until > %s LIMIT ?) AS r%d)", i, storeNow, s.workflows, storeNow, i)
		args = append(args, bstr(key), lf.f.Concurrency)
	}
	if len(args) == 0 {
		b.WriteString("SELECT -1, 0, " + storeNow)
	}
	rows, err := tx.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return time.Time{}, err
	}
	defer rows.Close()
	running := map[string]int{}
	var clock time.Time
	for rows.Next() {
		var i, n int
		if err := rows.Scan(&i, &n, nt(&clock)); err != nil {
			return time.Time{}, err
		}
		if i >= 0 {
			running[keys[i]] = n
		}
	}
	if err := rows.Err(); err != nil {
		return time.Time{}, err
	}
	for _, lf := range locked {
		inWindow := 0
		if lf.f.Rate > 0 {
			lf.log, inWindow = lf.log.window(clock, lf.f.Per)
		} else {
			lf.log = nil
		}
		lf.room = storage.FlowCapacity(lf.f, limit, running[lf.f.Key], inWindow)
	}
	return clock, nil
}

// candidates reads and locks the rows the claim may take (step 3 of claimLimited).
func (s *Store) candidates(ctx context.Context, tx *sql.Tx, r storage.ClaimRequest, names []string, pairs []flowPair, locked map[string]*lockedFlow, now time.Time) ([]candidate, error) {
	p := &picker{s: s, now: dbTime(now)}
	var picks []func()
	if len(names) == 0 {
		picks = append(picks, func() { p.free("", r.Limit, true) })
	}
	for _, name := range names {
		picks = append(picks, func() { p.free(name, r.Limit, true) })
	}
	for _, pair := range pairs {
		n := r.Limit
		if lf := locked[pair.key]; lf != nil {
			n = lf.room
		}
		if n > 0 {
			picks = append(picks, func() { p.governed(pair, n) })
		}
	}
	p.b.WriteString("SELECT u.id, u.run_at, u.flow, COALESCE(f.priority, 0) FROM (")
	p.union(picks)
	p.b.WriteString(") AS u LEFT JOIN " + s.flows + " AS f ON f.`key` = u.flow")
	rows, err := tx.QueryContext(ctx, p.b.String(), p.args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []candidate
	for rows.Next() {
		var (
			c    candidate
			flow []byte
		)
		if err := rows.Scan(&c.id, nt(&c.runAt), &flow, &c.prio); err != nil {
			return nil, err
		}
		c.flow = string(flow)
		out = append(out, c)
	}
	return out, rows.Err()
}

// pickCandidates orders cands by priority (higher first), RunAt and ID, and returns the first
// limit of them, at most the room of each locked key; it counts each locked key's take.
func pickCandidates(cands []candidate, limit int, locked map[string]*lockedFlow) []candidate {
	slices.SortFunc(cands, func(a, b candidate) int {
		if c := cmp.Compare(b.prio, a.prio); c != 0 {
			return c
		}
		if c := a.runAt.Compare(b.runAt); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	var out []candidate
	for _, c := range cands {
		if len(out) == limit {
			break
		}
		if lf := locked[c.flow]; lf != nil && c.flow != "" {
			if lf.taken == lf.room {
				continue
			}
			lf.taken++
		}
		out = append(out, c)
	}
	return out
}

// leaseTaken leases the taken rows to r.Owner, tagged with nonce (step 4 of claimLimited).
// Every row is locked by the candidates' read, so the checks only refuse a row whose key,
// not held here (held: the keys whose flows rows the transaction locked), the flows table
// now limits.
func (s *Store) leaseTaken(ctx context.Context, tx *sql.Tx, r storage.ClaimRequest, taken []candidate, held []string, now, runAt time.Time, nonce int64) error {
	args := []any{nonce, bstr(r.Owner), micros(r.TTL), dbTime(runAt), dbTime(now), dbTime(now)}
	for _, c := range taken {
		args = append(args, c.id)
	}
	args = append(args, dbTime(now))
	_, err := tx.ExecContext(ctx, "UPDATE "+s.workflows+" AS w SET w.claim_run_at = w.run_at, w.claim_nonce = ?,"+
		" w.state = 'running', w.lease_owner = ?, w.lease_token = w.lease_token + 1,"+
		" w.lease_until = "+storeNow+" + INTERVAL ? MICROSECOND, w.run_at = "+ts+", w.updated_at = "+ts+","+
		" w.wake_at = IF(w.wake_at > "+ts+", w.wake_at, NULL)"+
		" WHERE w.id IN ("+placeholders(len(taken))+") AND w.state IN ('idle', 'running') AND w.run_at <= "+ts+" AND "+expired("w.")+
		" AND "+s.notLimited(held), args...)
	return err
}

// logClaims adds the claims of this transaction to the rate windows of the locked keys with a
// rate that took workflows, at the clock read after the locks (step 5 of claimLimited).
func (s *Store) logClaims(ctx context.Context, tx *sql.Tx, keys []string, locked map[string]*lockedFlow, clock time.Time) error {
	var (
		cases strings.Builder
		args  []any
		in    []any
	)
	for _, key := range keys {
		lf := locked[key]
		if lf == nil || lf.f.Rate == 0 || lf.taken == 0 {
			continue
		}
		log := append(lf.log, [2]int64{clock.UnixMicro(), int64(lf.taken)})
		text, err := json.Marshal(log)
		if err != nil {
			return err
		}
		cases.WriteString(" WHEN ? THEN CONVERT(? USING utf8mb4)")
		args = append(args, bstr(key), text)
		in = append(in, bstr(key))
	}
	if len(in) == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, "UPDATE "+s.flows+" SET claim_log = CASE `key`"+cases.String()+" END"+
		" WHERE `key` IN ("+placeholders(len(in))+")", append(args, in...)...)
	return err
}
