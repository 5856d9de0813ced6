package integration

import (
	"net/http"
	_ "net/http/pprof"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"testing"
	"time"
)

// scalePprof serves net/http/pprof on SHOAL_SCALE_PPROF (an address like 127.0.0.1:6060) while TestBenchScale
// runs, to profile any phase from outside: `go tool pprof -seconds 20 http://127.0.0.1:6060/debug/pprof/profile`.
func scalePprof(t *testing.T) {
	addr := os.Getenv("SHOAL_SCALE_PPROF")
	if addr == "" {
		return
	}
	srv := &http.Server{Addr: addr, Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
	go srv.ListenAndServe()
	t.Cleanup(func() { srv.Close() })
	t.Logf("pprof on http://%s/debug/pprof/", addr)
}

// scaleProfile starts a CPU profile of one phase of TestBenchScale when SHOAL_SCALE_PROFILE names a directory
// (the file is <dir>/<phase>.cpu.pprof; read it with `go tool pprof -top integration.test FILE`), and returns
// the function that stops it. Without the variable it does nothing.
func scaleProfile(t *testing.T, phase string) (stop func()) {
	dir := os.Getenv("SHOAL_SCALE_PROFILE")
	if dir == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, phase+".cpu.pprof")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	t.Logf("profiling %s into %s", phase, path)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			f.Close()
			if g, err := os.Create(filepath.Join(dir, phase+".goroutines.txt")); err == nil {
				pprof.Lookup("goroutine").WriteTo(g, 1)
				g.Close()
			}
		})
	}
	t.Cleanup(stop) // a phase that times out still leaves its profile
	return stop
}
