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
# `make test` already.
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$(go list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
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
