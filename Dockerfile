# syntax=docker/dockerfile:1
# A static binary on a distroless base, running as a non-root user.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY *.go schema.sql openapi.json ./
COPY internal ./internal
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/tasks-api .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tasks-api /tasks-api
USER nonroot:nonroot
EXPOSE 8000
ENTRYPOINT ["/tasks-api"]
