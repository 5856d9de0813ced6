package deployer

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

// appServerEnv makes the test binary run as the app the cluster tests deploy: a small HTTP service, so the
// tests need nothing but bash and this binary on the machine.
const appServerEnv = "SHOAL_TEST_APP_SERVER"

// appServer serves the release it runs from (its working directory, the app home): GET / answers the
// content of version.txt, GET /health answers 200 unless the release holds a file named "unhealthy". It
// listens on 127.0.0.1 at the port in PORT_<node name> (each in-process node needs its own).
func appServer() int {
	port := os.Getenv("PORT_" + os.Getenv("SHOAL_NODE"))
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "app server:", err)
		return 1
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile("version.txt")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%s pid=%d", strings.TrimSpace(string(b)), os.Getpid())
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat("unhealthy"); err == nil {
			http.Error(w, "this release is broken on purpose", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	fmt.Fprintf(os.Stderr, "app server listening on %s\n", ln.Addr())
	if err := http.Serve(ln, mux); err != nil {
		fmt.Fprintln(os.Stderr, "app server:", err)
		return 1
	}
	return 0
}
