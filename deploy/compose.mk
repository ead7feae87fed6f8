# Docker Compose targets, included by the Makefile (`include deploy/compose.mk`).
# Thin wrappers over `docker compose`; `make help` lists each target's `## ` text.

COMPOSE ?= docker compose
JAEGER_URL ?= http://localhost:16686
service ?=
consumers ?= 2

.PHONY: up
up: ## start the whole stack in the background (RabbitMQ, Jaeger, gateway, producer, consumer)
	$(COMPOSE) up -d --wait

.PHONY: down
down: ## stop and remove the stack's containers (the broker's volume stays)
	$(COMPOSE) down

.PHONY: ps
ps: ## list the stack's containers with their health
	$(COMPOSE) ps

.PHONY: logs
logs: ## follow the logs, of one service with service=NAME
	$(COMPOSE) logs -f --tail=200 $(service)

.PHONY: scale
scale: ## run consumers=N consumer replicas
	$(COMPOSE) up -d --wait --no-recreate --scale consumer=$(consumers)

.PHONY: restart
restart: ## restart the services, or one with service=NAME
	$(COMPOSE) restart $(service)

.PHONY: build
build: ## build the one image of the three services (deploy/Dockerfile)
	$(COMPOSE) build

.PHONY: traces
traces: ## print the Jaeger UI URL and the newest gateway trace
	@echo "Jaeger UI: $(JAEGER_URL)"
	@curl -fsS '$(JAEGER_URL)/api/traces?service=gateway&limit=1&lookback=1h' | python3 -c \
	  'import json, sys; t = json.load(sys.stdin)["data"]; \
	  print("newest gateway trace: %s/trace/%s" % (sys.argv[1], t[0]["traceID"]) if t \
	  else "no gateway trace yet: call the API first")' '$(JAEGER_URL)'
