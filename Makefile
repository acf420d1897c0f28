# The README's commands. `make test` is what CI runs.
GO ?= go

.PHONY: test lint bench fmt fuzz chaos

test:
	@$(GO) run ./internal/dbtest/report
	$(GO) test -race -count=1 -timeout 25m ./...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1)
	$(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

# Each fuzz target for FUZZTIME (go test -fuzz takes one target at a time); the seeds run in
# `make test` already. A target fails the run when it writes a failing input, or fails any
# other way but one: Go 1.26's fuzz coordinator can end a clean run at -fuzztime with a bare
# "context deadline exceeded" and no input (go.dev/issue/75804, fixed in Go 1.27), which is
# reported and not counted.
FUZZTIME ?= 20s
fuzz:
	@out=$$(mktemp); trap 'rm -f $$out' EXIT; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; \
			if ! $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg > $$out 2>&1; then \
				cat $$out; \
				if grep -q 'Failing input written' $$out || ! grep -q '^    context deadline exceeded$$' $$out \
					|| [ "$$(grep -c -e '^--- FAIL' -e '^    ' $$out)" != 2 ]; then exit 1; fi; \
				echo "== $$f: stopped by Go's fuzz coordinator at -fuzztime (go.dev/issue/75804), no failing input"; \
			else tail -n 2 $$out; fi; \
		done; \
	done

# The fault-injection suite at its full sizes (kills, database restarts, network faults, clock
# skew, frozen workers, failing storage, bbolt crashes and a full disk; see RELIABILITY.md),
# whose figures replace the table of RELIABILITY.md, then every fuzz target for FUZZTIME.
# `make test` runs the same suite at its short sizes.
chaos:
	rm -f chaos-results.jsonl
	CHRONOFORGE_CHAOS=full CHRONOFORGE_CHAOS_RESULTS=$(CURDIR)/chaos-results.jsonl \
		$(GO) test -count=1 -timeout 120m -v -run '^(TestChaos|TestBoltDiskFull|TestBrokenFencingIsCaught)$$' ./internal/chaos
	$(GO) run ./internal/chaos/reliability -results chaos-results.jsonl -doc RELIABILITY.md
	$(MAKE) fuzz
