package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// Cluster is a running Redis Cluster of masters only, no replicas.
type Cluster struct {
	Nodes []*Server
}

// Addrs returns the address of every node: what a client takes as seeds.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// StartCluster starts a Redis Cluster of n masters (at least 1), each on
// ports of its own (the client's and the Cluster bus's), the 16384 slots
// split evenly between them, and returns once every node reports the
// cluster ok. args are further options of every node.
func StartCluster(t testing.TB, n int, args ...string) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatal("redistest: a cluster needs a node")
	}
	c := new(Cluster)
	for range n {
		s := &Server{t: t, dir: t.TempDir(), node: true, args: append([]string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			// Every node must answer for its slots: a test's cluster
			// has no replicas that could take over.
			"--cluster-require-full-coverage", "yes",
		}, args...)}
		c.Nodes = append(c.Nodes, launch(t, s))
	}
	// Slots first, then the handshake: each node announces its own
	// slots to the others as they meet.
	for i, s := range c.Nodes {
		first, last := i*clusterSlots/n, (i+1)*clusterSlots/n-1
		if _, err := s.Do("CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(first), strconv.Itoa(last)); err != nil {
			t.Fatalf("redis cluster: %v", err)
		}
	}
	for _, s := range c.Nodes[1:] {
		if _, err := c.Nodes[0].Do("CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(s.port), strconv.Itoa(s.bus)); err != nil {
			t.Fatalf("redis cluster: %v", err)
		}
	}
	c.waitOK(t)
	return c
}

// waitOK waits, polling, until every node knows every other and says
// cluster_state:ok, for at most startTimeout.
func (c *Cluster) waitOK(t testing.TB) {
	t.Helper()
	want := fmt.Sprintf("cluster_known_nodes:%d", len(c.Nodes))
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var last string
		ok := true
		for _, s := range c.Nodes {
			info, err := s.Do("CLUSTER", "INFO")
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, want) {
				ok, last = false, fmt.Sprintf("%s: %v %s", s.Addr, err, info)
				break
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis cluster not ok after %s: %s", startTimeout, last)
		}
		<-tick.C
	}
}

// Do sends one command to a server without TLS or password, in plain
// RESP, and returns its answer: the text of a simple or bulk string, or an integer's digits. An
// error reply is an error.
func (s *Server) Do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("%s: %s", strings.Join(args, " "), line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("%s: unexpected reply %q", strings.Join(args, " "), line)
}
