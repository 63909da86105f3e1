GO ?= go
BIN := bin

.PHONY: all build run test test-daemons bench fuzz clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/rs ./cmd/service ./servers/kv ./servers/idle ./servers/httpcount

# Start rs in the foreground with the demo configuration; the services'
# logs go to var/log/<label>.log in the checkout.
run: build
	$(BIN)/rs --config examples/system.toml --log-dir var/log

# Vet and every test, race detector on.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 10m ./...

# Real daemons under rs (redis-server as type notify), installed from
# Debian when missing; a daemon that cannot be had is skipped, saying so.
# Not part of make test.
test-daemons:
	GO=$(GO) sh tests/daemons.sh

# Speed figures, beside runit and s6 (never part of make test): a few
# minutes, bounded by the bench's own -timeout. Installs runit, s6,
# redis-tools, wrk and apache2-utils from Debian's packages when missing
# (tests/bench/install-peers.sh).
# BENCHFLAGS passes flags, e.g. BENCHFLAGS="-scenario crash -n 5".
BENCHFLAGS ?=
bench: build
	$(GO) run ./tests/bench -bin $(BIN) $(BENCHFLAGS)

# The long fault campaign (minutes); its table replaces the campaign
# section of RELIABILITY.md. CAMPAIGN_FAULTS=N for another length.
CAMPAIGN_FAULTS ?= 10000
.PHONY: campaign
campaign:
	$(GO) run ./tests/campaign -faults $(CAMPAIGN_FAULTS) -out RELIABILITY.md

# Fuzz the wire decoder (FUZZTIME=5m for a real run).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./msg

clean:
	rm -rf $(BIN)
