package chaos

import (
	"time"
)

// The faults that need a server or proxies of their own: database restarts on a private
// server, and network faults through one proxy per worker.

// restart returns the fault that restarts the private database server by mode, down for a
// random half second to two seconds. Every worker loses its connections at once, so each may
// lose its runs in flight.
func restart(mode RestartMode) func(r *run) int {
	return func(r *run) int {
		down := 500*time.Millisecond + time.Duration(r.rng.Int64N(int64(1500*time.Millisecond)))
		r.server.Restart(r.t, mode, down)
		return len(r.c.procs) * r.conc
	}
}

// proxied puts a proxy of its own between worker i and the database.
func proxied(r *run, i int, cfg *workerConfig) {
	addr, err := hostPort(r.backend, cfg.DSN)
	if err != nil {
		r.t.Fatal(err)
	}
	p := StartProxy(r.t, addr)
	if cfg.DSN, err = dsnAt(r.backend, cfg.DSN, p.Addr()); err != nil {
		r.t.Fatal(err)
	}
	r.proxies = append(r.proxies, p)
}

// slowLinks adds 5 ms each way to every worker's link.
func slowLinks(r *run, i int, cfg *workerConfig) {
	proxied(r, i, cfg)
	r.proxies[i].SetLatency(5 * time.Millisecond)
}

// cut closes every connection of a random worker at once, mid-statement for some.
func cut(r *run) int {
	r.proxies[r.rng.IntN(len(r.proxies))].Cut()
	return r.conc
}

// partition cuts a random worker off the database (nothing crosses, nothing is closed) for
// longer than its lease, and until others took its workflows over, then heals the link: the
// statements it sent meanwhile arrive late, under leases that are gone.
func partition(r *run) int {
	i := r.rng.IntN(len(r.proxies))
	p := r.proxies[i]
	p.Partition()
	defer p.Heal()
	waitSuperseded(r, r.c.owner(i))
	return r.conc
}
