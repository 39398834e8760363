# cdc-relay: one static binary on a minimal base.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/cdc-relay ./cmd/cdc-relay

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cdc-relay /usr/local/bin/cdc-relay
USER nonroot
ENTRYPOINT ["/usr/local/bin/cdc-relay"]
CMD ["run"]
