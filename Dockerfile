FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -o /sluice ./cmd/sluice
# The volumes' mount points, owned by the unprivileged user so that a
# named volume starts writable by it.
RUN mkdir -p /owned/data /owned/datasets

# Runs as the image's unprivileged user (uid 65532), never root.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /sluice /sluice
COPY --from=build --chown=65532:65532 /owned/ /
USER nonroot:nonroot
ENTRYPOINT ["/sluice"]
