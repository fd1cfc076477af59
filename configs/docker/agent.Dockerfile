# syntax=docker/dockerfile:1
# amtops-agent image. Build from the repository root:
#   docker build -f configs/docker/agent.Dockerfile --build-arg VERSION=$(git describe --always) -t amtops/agent .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/amtops/amtops/internal/version.stamped=${VERSION}" \
      -o /out/ ./agent/cmd/amtops-agent 

# No shell, no package manager, runs as an unprivileged user.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/amtops-agent /usr/local/bin/amtops-agent

USER nonroot:nonroot
EXPOSE 9971
ENTRYPOINT ["/usr/local/bin/amtops-agent"]
CMD ["--config", "/etc/amtops/agent.yaml"]
