// Command payments is the example service as a static binary for an image: the same behaviour as
// ../app.py (the zipapp), with what the build decides baked in by the linker, not read at run time.
//
// Build-time (go build -ldflags "-X main.version=… -X main.broken=true -X main.faulty=true -X main.label=…"):
// the version /version answers, whether /health fails (a bad build), whether every second GET / and /pay
// answers 500 (a faulty build), and a label that changes the bytes but not the version.
//
// Run-time (environment): PORT (default 8080), APP_ENV (default dev), BUILD_VERSION (default unknown),
// FEATURE_NEW_UI ("true" turns it on), LISTEN_HOST (default 0.0.0.0: in a container the port is published
// from outside the app's network namespace, so loopback would be unreachable).
package main

import (
	"context"
	"encoding/json"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// Set by the linker (-X); strings because -X sets only strings.
var (
	version = "unknown"
	broken  = "false"
	faulty  = "false"
	label   = ""
)

// Info is what /version answers (the fields and their order of app.py's version()).
type Info struct {
	Version      string `json:"version"`
	BuildVersion string `json:"build_version"`
	Env          string `json:"env"`
	FeatureNewUI bool   `json:"feature_new_ui"`
}

// App answers the example's endpoints from its build and its environment.
type App struct {
	info   Info
	broken bool
	faulty bool
	served atomic.Uint64
}

func newApp() *App {
	info := Info{Version: version, BuildVersion: getenv("BUILD_VERSION", "unknown"), Env: getenv("APP_ENV", "dev"),
		FeatureNewUI: os.Getenv("FEATURE_NEW_UI") == "true"}
	return &App{info: info, broken: broken == "true", faulty: faulty == "true"}
}

// failsNow is true for every second business request of a faulty build (counted across connections).
func (a *App) failsNow() bool {
	return a.faulty && a.served.Add(1)%2 == 0
}

// ServeHTTP matches the raw request target as app.py does (a query string makes it another path).
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		reply(w, http.StatusNotImplemented, map[string]any{"error": "unsupported method"})
		return
	}
	path := r.RequestURI
	switch {
	case path == "/health" && a.broken:
		reply(w, http.StatusInternalServerError, map[string]any{"status": "broken build"})
	case path == "/health":
		reply(w, http.StatusOK, map[string]any{"status": "ok"})
	case path == "/version":
		reply(w, http.StatusOK, a.info)
	case (path == "/" || path == "/pay") && a.failsNow():
		reply(w, http.StatusInternalServerError, map[string]any{"error": "faulty build"})
	case path == "/":
		ui := "classic"
		if a.info.FeatureNewUI {
			ui = "new"
		}
		reply(w, http.StatusOK, map[string]any{"service": "payments", "version": version, "env": a.info.Env, "ui": ui})
	case path == "/pay":
		reply(w, http.StatusOK, map[string]any{"paid": true, "version": version, "env": a.info.Env})
	default:
		reply(w, http.StatusNotFound, map[string]any{"error": "not found"})
	}
}

// getenv is os.getenv(name, default) of Python: the default only when the variable is unset.
func getenv(name, fallback string) string {
	if value, ok := os.LookupEnv(name); ok {
		return value
	}
	return fallback
}

func reply(w http.ResponseWriter, status int, body any) {
	payload, err := json.Marshal(body)
	if err != nil {
		panic(err) // only our own maps and structs are marshalled: a failure is a bug
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(payload)
}

func main() {
	port, err := strconv.ParseUint(getenv("PORT", "8080"), 10, 16)
	if err != nil {
		log.Fatalf("PORT: %v", err)
	}
	listener, err := net.Listen("tcp", net.JoinHostPort(getenv("LISTEN_HOST", "0.0.0.0"), strconv.Itoa(int(port))))
	if err != nil {
		log.Fatal(err)
	}
	app := newApp()
	server := &http.Server{Handler: app, ReadHeaderTimeout: 10 * time.Second}
	announce(app.info, listener.Addr().(*net.TCPAddr).Port)

	stop, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	go func() {
		<-stop.Done()
		ending, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		server.Shutdown(ending) // answer the requests in flight, then return from Serve
	}()
	if err := server.Serve(listener); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// announce prints app.py's start line; the label too when there is one (it also keeps the linker from
// dropping the variable, so that a label does change the bytes).
func announce(info Info, port int) {
	line := map[string]any{"msg": "payments listening", "version": info.Version, "build_version": info.BuildVersion,
		"env": info.Env, "feature_new_ui": info.FeatureNewUI, "port": port}
	if label != "" {
		line["label"] = label
	}
	payload, _ := json.Marshal(line)
	os.Stdout.Write(append(payload, '\n'))
}
