package api

import "net/http"

// getHealthz answers 200 while the node can write its Raft log, 503 with the reason otherwise. It needs no token:
// load balancers and supervisors ask it.
func (srv *Server) getHealthz(w http.ResponseWriter, r *http.Request) {
	if err := srv.n.CheckDisk(); err != nil {
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ok": false, "node": srv.n.Name(), "code": "disk",
			"error": err.Error() + ": free space or fix the disk; this node cannot record what the mesh commits"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "node": srv.n.Name()})
}
