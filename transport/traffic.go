package transport

// Traffic returns the bytes this endpoint has sent and received on its live QUIC connections (accepted and
// dialed; QUIC payload, without UDP and IP headers). A connection's bytes leave the sum when it closes, so the
// difference of two calls is exact only while the connections last, as between an idle mesh's peers.
func (e *Endpoint) Traffic() (sent, received uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for c := range e.accepted {
		st := c.ConnectionStats()
		sent, received = sent+st.BytesSent, received+st.BytesReceived
	}
	for _, ent := range e.dials {
		select {
		case <-ent.done:
			if ent.conn != nil {
				st := ent.conn.ConnectionStats()
				sent, received = sent+st.BytesSent, received+st.BytesReceived
			}
		default:
		}
	}
	return sent, received
}
