package integration

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Ports are chosen below the kernel's ephemeral range, so that no outgoing connection of any process on this
// shared machine can take one between our check and the node's bind, and each is checked free (TCP and UDP, as
// gossip needs both) on the node's own loopback address. A run never hands out the same port twice.
var ports struct {
	sync.Mutex
	used map[string]bool
}

// freePort returns a port free for TCP and UDP on ip.
func freePort(t testing.TB, ip string) int {
	t.Helper()
	lo, hi := portRange()
	ports.Lock()
	defer ports.Unlock()
	if ports.used == nil {
		ports.used = map[string]bool{}
	}
	for range 1000 {
		p := lo + rand.IntN(hi-lo)
		addr := net.JoinHostPort(ip, strconv.Itoa(p))
		if ports.used[addr] || !portFree(addr) {
			continue
		}
		ports.used[addr] = true
		return p
	}
	t.Fatalf("no free port on %s in [%d, %d)", ip, lo, hi)
	return 0
}

func portFree(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
}

// portRange is [20000, start of the ephemeral range), or a fixed range if the kernel's is unusual.
func portRange() (lo, hi int) {
	lo, hi = 20000, 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(b))
	if len(f) == 2 {
		if start, err := strconv.Atoi(f[0]); err == nil && start > lo+1000 {
			hi = start
		}
	}
	return lo, hi
}

var (
	aliasOnce sync.Once
	aliasOK   bool
)

// loopbackIP returns the address for the i-th node (from 0): 127.0.0.(i+1) where the loopback answers on the
// whole 127/8 (Linux), as operators would run three nodes on one machine; 127.0.0.1 for every node otherwise.
func loopbackIP(i int) string {
	aliasOnce.Do(func() {
		ln, err := net.Listen("tcp", "127.0.0.2:0")
		if err == nil {
			ln.Close()
			aliasOK = true
		}
	})
	if !aliasOK || i > 250 {
		return "127.0.0.1"
	}
	return fmt.Sprintf("127.0.0.%d", i+1)
}
