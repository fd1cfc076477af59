# syntax=docker/dockerfile:1
# amtops-server image. Build from the repository root:
#   docker build -f configs/docker/server.Dockerfile --build-arg VERSION=$(git describe --always) -t amtops/server .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/amtops/amtops/internal/version.stamped=${VERSION}" \
      -o /out/ ./server/cmd/amtops-server ./server/cmd/amtopsctl

# No shell, no package manager, runs as an unprivileged user.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/amtops-server /usr/local/bin/amtops-server
COPY --from=build /out/amtopsctl /usr/local/bin/amtopsctl
USER nonroot:nonroot
EXPOSE 7443 7080
ENTRYPOINT ["/usr/local/bin/amtops-server"]
CMD ["--config", "/etc/amtops/server.yaml"]
