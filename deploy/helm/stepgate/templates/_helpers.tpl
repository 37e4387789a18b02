{{/* Chart name, overridable. */}}
{{- define "stepgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name: release name, unless it already contains the chart name. */}}
{{- define "stepgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Selector labels: stable across upgrades (Deployment selectors are immutable). */}}
{{- define "stepgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stepgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "stepgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "stepgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Name of the Secret holding pingone-client-secret and cookie-keys. */}}
{{- define "stepgate.secretName" -}}
{{- if .Values.existingSecret -}}
{{- .Values.existingSecret -}}
{{- else -}}
{{- printf "%s-secrets" (include "stepgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "stepgate.image" -}}
{{- printf "%s:%s" .Values.stepgate.image.repository (default .Chart.AppVersion .Values.stepgate.image.tag) -}}
{{- end -}}

{{/* Deployment mode: sidecar (the proxy door) or authz (a central check service). */}}
{{- define "stepgate.mode" -}}
{{- if not (has .Values.mode (list "sidecar" "authz")) -}}
{{- fail "mode must be sidecar or authz" -}}
{{- end -}}
{{- .Values.mode -}}
{{- end -}}

{{/* Non-empty when the authz Deployment serves ext_authz over gRPC. */}}
{{- define "stepgate.grpc" -}}
{{- if and (eq (include "stepgate.mode" .) "authz") (has "ext-authz" (splitList "," (.Values.authz.frontDoors | nospace))) -}}
true
{{- end -}}
{{- end -}}

{{/* STEPGATE_TRUSTED_PROXIES: said explicitly in authz mode. */}}
{{- define "stepgate.trustedProxies" -}}
{{- if eq (include "stepgate.mode" .) "authz" -}}
{{- required "authz.trustedProxies is required in authz mode (the front proxies' or Envoys' CIDRs)" .Values.authz.trustedProxies -}}
{{- else -}}
{{- .Values.identity.trustedProxies -}}
{{- end -}}
{{- end -}}
