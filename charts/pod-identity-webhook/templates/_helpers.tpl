{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "piw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the prefix of every resource name.
*/}}
{{- define "piw.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "piw.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "piw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "piw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "piw.labels" -}}
helm.sh/chart: {{ include "piw.chart" . }}
{{ include "piw.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pod-identity-webhook
{{- end }}

{{/*
The opt-out label: pods, and namespaces, carrying it are never mutated.
The webhook's own pods carry it.
*/}}
{{- define "piw.skipLabel" -}}
eks.amazonaws.com/skip-pod-identity-webhook
{{- end }}

{{- define "piw.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "piw.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "piw.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/* "true" when the webhook runs outside the cluster (webhook.url set). */}}
{{- define "piw.urlMode" -}}
{{- if .Values.webhook.url }}true{{ end }}
{{- end }}

{{- define "piw.webhookConfigName" -}}
{{- include "piw.fullname" . }}
{{- end }}

{{- define "piw.serviceName" -}}
{{- include "piw.fullname" . }}
{{- end }}

{{- define "piw.metricsServiceName" -}}
{{- printf "%s-metrics" (include "piw.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name the role-mapping ConfigMap must have: the binary watches this name. */}}
{{- define "piw.roleMappingConfigMapName" -}}
pod-identity-webhook
{{- end }}

{{- define "piw.containerCredentialsConfigMapName" -}}
{{- if .Values.containerCredentials.existingConfigMap }}
{{- .Values.containerCredentials.existingConfigMap }}
{{- else }}
{{- printf "%s-container-credentials" (include "piw.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "piw.containerCredentialsDir" -}}
/etc/pod-identity-webhook/container-credentials
{{- end }}

{{- define "piw.certDir" -}}
/etc/webhook/certs
{{- end }}

{{/* Name of the Secret holding the serving certificate, per mode. */}}
{{- define "piw.tlsSecretName" -}}
{{- $mode := .Values.certificates.mode }}
{{- if eq $mode "builtin" }}
{{- default (printf "%s-tls" (include "piw.fullname" .)) .Values.certificates.builtin.secretName }}
{{- else if eq $mode "certManager" }}
{{- default (printf "%s-tls" (include "piw.fullname" .)) .Values.certificates.certManager.secretName }}
{{- else }}
{{- required "certificates.secret.existingSecret is required when certificates.mode=secret: name a kubernetes.io/tls Secret (keys tls.crt, tls.key) in the release namespace" .Values.certificates.secret.existingSecret }}
{{- end }}
{{- end }}

{{- define "piw.certificateName" -}}
{{- printf "%s-serving" (include "piw.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* base64 of a PEM bundle given either as PEM or already base64-encoded. */}}
{{- define "piw.encodeCABundle" -}}
{{- $v := . | trim }}
{{- if hasPrefix "-----BEGIN" $v }}
{{- $v | b64enc }}
{{- else }}
{{- $v | nospace }}
{{- end }}
{{- end }}

{{/* Fails early with a readable message on value combinations the schema cannot express. */}}
{{- define "piw.validate" -}}
{{- if not (include "piw.urlMode" .) }}
{{- if eq .Values.certificates.mode "secret" }}
{{- if not .Values.certificates.secret.existingSecret }}
{{- fail "certificates.secret.existingSecret is required when certificates.mode=secret: name a kubernetes.io/tls Secret (keys tls.crt, tls.key) in the release namespace" }}
{{- end }}
{{- if not .Values.certificates.secret.caBundle }}
{{- fail "certificates.secret.caBundle is required when certificates.mode=secret: give the PEM (or base64 of the PEM) of the CA that signed the Secret's certificate" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Command-line flags of the webhook server, as a YAML list. */}}
{{- define "piw.args" -}}
{{- $c := .Values.config }}
{{- $cc := .Values.containerCredentials }}
{{- $a := list }}
{{- $a = append $a (printf "--port=%d" (int64 .Values.ports.webhook)) }}
{{- $a = append $a (printf "--metrics-port=%d" (int64 .Values.ports.metrics)) }}
{{- $a = append $a (printf "--namespace=%s" .Release.Namespace) }}
{{- $a = append $a (printf "--service-name=%s" (include "piw.serviceName" .)) }}
{{- if eq .Values.certificates.mode "builtin" }}
{{- $a = append $a "--in-cluster=true" }}
{{- $a = append $a (printf "--tls-secret=%s" (include "piw.tlsSecretName" .)) }}
{{- $a = append $a (printf "--webhook-config-name=%s" (include "piw.webhookConfigName" .)) }}
{{- else }}
{{- $a = append $a "--in-cluster=false" }}
{{- $a = append $a (printf "--tls-cert=%s/tls.crt" (include "piw.certDir" .)) }}
{{- $a = append $a (printf "--tls-key=%s/tls.key" (include "piw.certDir" .)) }}
{{- end }}
{{- $a = append $a (printf "--annotation-prefix=%s" $c.annotationPrefix) }}
{{- $a = append $a (printf "--token-audience=%s" $c.tokenAudience) }}
{{- $a = append $a (printf "--token-mount-path=%s" $c.tokenMountPath) }}
{{- $a = append $a (printf "--token-expiration=%d" (int64 $c.tokenExpiration)) }}
{{- if $c.awsDefaultRegion }}
{{- $a = append $a (printf "--aws-default-region=%s" $c.awsDefaultRegion) }}
{{- end }}
{{- $a = append $a (printf "--sts-regional-endpoint=%t" $c.stsRegionalEndpoint) }}
{{- $a = append $a (printf "--service-account-lookup-grace-period=%s" $c.serviceAccountLookupGracePeriod) }}
{{- $a = append $a (printf "--watch-config-map=%t" .Values.roleMapping.enabled) }}
{{- if $cc.enabled }}
{{- $a = append $a (printf "--watch-container-credentials-config=%s/config.json" (include "piw.containerCredentialsDir" .)) }}
{{- $a = append $a (printf "--container-credentials-audience=%s" $cc.audience) }}
{{- $a = append $a (printf "--container-credentials-token-mount-path=%s" $cc.tokenMountPath) }}
{{- $a = append $a (printf "--container-credentials-token-volume-name=%s" $cc.tokenVolumeName) }}
{{- $a = append $a (printf "--container-credentials-token-path=%s" $cc.tokenPath) }}
{{- $a = append $a (printf "--container-credentials-full-uri=%s" $cc.fullUri) }}
{{- end }}
{{- $a = append $a (printf "--v=%d" (int64 $c.logVerbosity)) }}
{{- $a = append $a (printf "--log-format=%s" $c.logFormat) }}
{{- $a = append $a (printf "--shutdown-timeout=%s" $c.shutdownTimeout) }}
{{- range .Values.extraArgs }}
{{- $a = append $a (toString .) }}
{{- end }}
{{- toYaml $a }}
{{- end }}
