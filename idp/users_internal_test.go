package idp

import (
	"fmt"
	"testing"
)

// TestUserIndexPrune: the index drops what has ended, then the oldest
// past its bounds.
func TestUserIndexPrune(t *testing.T) {
	var ix userIndex
	for i := range maxUserSessions + 10 {
		ix.Sessions = append(ix.Sessions, indexedSession{SID: fmt.Sprint(i), Created: int64(1000 + i), End: 5000})
	}
	ix.Sessions = append(ix.Sessions, indexedSession{SID: "ended", Created: 2000, End: 100})
	for i := range maxUserFamilies + 10 {
		// Newest first, as a lost-and-found family may come in late.
		ix.Families = append(ix.Families, indexedFamily{Family: fmt.Sprint(i), Created: int64(3000 - i), End: 5000})
	}
	ix.prune(200)
	if len(ix.Sessions) != maxUserSessions || ix.Sessions[0].SID != "10" {
		t.Errorf("sessions: %d, oldest %q; want %d from 10", len(ix.Sessions), ix.Sessions[0].SID, maxUserSessions)
	}
	if len(ix.Families) != maxUserFamilies || ix.Families[0].Family != fmt.Sprint(maxUserFamilies-1) {
		t.Errorf("families: %d, oldest %q; want %d from %d", len(ix.Families), ix.Families[0].Family, maxUserFamilies, maxUserFamilies-1)
	}
	if got := ix.end(); got != 5000 {
		t.Errorf("end: %d, want 5000", got)
	}
}
