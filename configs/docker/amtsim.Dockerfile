# syntax=docker/dockerfile:1
# amtsim image. Build from the repository root:
#   docker build -f configs/docker/amtsim.Dockerfile --build-arg VERSION=$(git describe --always) -t amtops/amtsim .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/amtops/amtops/internal/version.stamped=${VERSION}" \
      -o /out/ ./internal/amtsim/cmd/amtsim 

# No shell, no package manager, runs as an unprivileged user.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/amtsim /usr/local/bin/amtsim

USER nonroot:nonroot
EXPOSE 16992 16993
ENTRYPOINT ["/usr/local/bin/amtsim"]
CMD ["--devices", "20", "--profile", "factory"]
