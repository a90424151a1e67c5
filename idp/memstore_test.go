package idp_test

import (
	"testing"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/idp/storetest"
)

func TestMemoryStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T, c *storetest.Clock) idp.Store {
		s := idp.NewMemoryStore(c.Now)
		t.Cleanup(func() { s.Close() })
		return s
	})
}
