package caddymodule

import (
	"context"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authgate/authgate/idp"
)

// TestProviderAuditDeviceLevels: a wrong or throttled user_code on the
// device page is logged at warn, as a failed login is; an answer at info.
func TestProviderAuditDeviceLevels(t *testing.T) {
	tests := []struct {
		outcome string
		want    zapcore.Level
	}{
		{idp.OutcomeInvalid, zapcore.WarnLevel},
		{idp.OutcomeThrottled, zapcore.WarnLevel},
		{idp.OutcomeGranted, zapcore.InfoLevel},
		{idp.OutcomeDenied, zapcore.InfoLevel},
	}
	for _, tt := range tests {
		t.Run(tt.outcome, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			a := &providerAudit{logger: zap.New(core), issuer: "https://op.example"}
			a.event(context.Background(), idp.Event{Type: idp.EventDeviceAuthorization, Outcome: tt.outcome, ClientID: "cli"})
			lines := logs.TakeAll()
			if len(lines) != 1 || lines[0].Level != tt.want || lines[0].Message != idp.EventDeviceAuthorization {
				t.Fatalf("lines %v, want one %s line %q", lines, tt.want, idp.EventDeviceAuthorization)
			}
		})
	}
}
