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

{{/*
Namespace of every namespaced object: namespaceOverride, else the release's.
*/}}
{{- define "piw.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
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
Labels of one object: the user's extra labels under the chart's, which win on
a clash (the selector and management labels must stay what the chart says).
Takes (dict "context" $ "extra" <map> ["component" <name>]).
*/}}
{{- define "piw.objectLabels" -}}
{{- $own := include "piw.labels" .context | fromYaml }}
{{- with .component }}
{{- $_ := set $own "app.kubernetes.io/component" . }}
{{- end }}
{{- toYaml (merge $own (.extra | default dict)) }}
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

{{/*
Name of the MutatingWebhookConfiguration. Never "pod-identity-webhook": that is
the name of the configuration EKS registers for its own webhook (and the one the
reference webhook's manifests use), so the default carries a suffix.
*/}}
{{- define "piw.webhookConfigName" -}}
{{- default (printf "%s-mutating" (include "piw.fullname" .)) .Values.webhook.configurationName }}
{{- end }}

{{/* The MutatingWebhookConfiguration name EKS uses for its own webhook. */}}
{{- define "piw.eksWebhookConfigName" -}}
pod-identity-webhook
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
{{- else if .Values.certificates.secret.create }}
{{- printf "%s-tls" (include "piw.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- required "certificates.secret.existingSecret is required when certificates.mode=secret: name a kubernetes.io/tls Secret (keys tls.crt, tls.key) in the release namespace, or set certificates.secret.create=true with certificates.secret.certificate and certificates.secret.key" .Values.certificates.secret.existingSecret }}
{{- end }}
{{- end }}

{{/* caBundle of the secret mode: the given CA, else (chart-created Secret) the certificate itself. */}}
{{- define "piw.secretModeCABundle" -}}
{{- $s := .Values.certificates.secret }}
{{- if $s.caBundle }}
{{- include "piw.encodeCABundle" $s.caBundle }}
{{- else if $s.create }}
{{- include "piw.encodeCABundle" $s.certificate }}
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
{{- $s := .Values.certificates.secret }}
{{- if eq .Values.certificates.mode "secret" }}
{{- if $s.create }}
{{- if $s.existingSecret }}
{{- fail "certificates.secret.create=true and certificates.secret.existingSecret are exclusive: the chart creates the Secret from certificates.secret.certificate and certificates.secret.key; unset one of them" }}
{{- end }}
{{- if not (hasPrefix "-----BEGIN" (trim $s.certificate)) }}
{{- fail "certificates.secret.certificate must be a PEM certificate (-----BEGIN CERTIFICATE-----) when certificates.secret.create=true: pass it with --set-file certificates.secret.certificate=tls.crt" }}
{{- end }}
{{- if not (hasPrefix "-----BEGIN" (trim $s.key)) }}
{{- fail "certificates.secret.key must be a PEM private key (-----BEGIN ... PRIVATE KEY-----) when certificates.secret.create=true: pass it with --set-file certificates.secret.key=tls.key" }}
{{- end }}
{{- else }}
{{- if not $s.existingSecret }}
{{- fail "certificates.secret.existingSecret is required when certificates.mode=secret: name a kubernetes.io/tls Secret (keys tls.crt, tls.key) in the release namespace, or set certificates.secret.create=true with certificates.secret.certificate and certificates.secret.key" }}
{{- end }}
{{- if not $s.caBundle }}
{{- fail "certificates.secret.caBundle is required when certificates.mode=secret: give the PEM (or base64 of the PEM) of the CA that signed the Secret's certificate" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq (include "piw.webhookConfigName" .) (include "piw.eksWebhookConfigName" .) }}
{{- fail "webhook.configurationName must not be \"pod-identity-webhook\": EKS registers its own webhook under that name (and so do the reference webhook's manifests); pick another name or leave it empty for \"<fullname>-mutating\"" }}
{{- end }}
{{- end }}

{{/* Command-line flags of the webhook server, as a YAML list. */}}
{{- define "piw.args" -}}
{{- $c := .Values.config }}
{{- $cc := .Values.containerCredentials }}
{{- $a := list }}
{{- $a = append $a (printf "--port=%d" (int64 .Values.ports.webhook)) }}
{{- $a = append $a (printf "--metrics-port=%d" (int64 .Values.ports.metrics)) }}
{{- with $c.bindAddress }}
{{- $a = append $a (printf "--bind-address=%s" .) }}
{{- end }}
{{- $a = append $a (printf "--namespace=%s" (include "piw.namespace" .)) }}
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
{{- $a = append $a (printf "--tls-min-version=%s" (toString $c.tlsMinVersion)) }}
{{- with $c.tlsCipherSuites }}
{{- $a = append $a (printf "--tls-cipher-suites=%s" (join "," .)) }}
{{- end }}
{{- $a = append $a (printf "--annotation-prefix=%s" $c.annotationPrefix) }}
{{- $a = append $a (printf "--token-audience=%s" $c.tokenAudience) }}
{{- $a = append $a (printf "--token-mount-path=%s" $c.tokenMountPath) }}
{{- $a = append $a (printf "--token-expiration=%d" (int64 $c.tokenExpiration)) }}
{{- if $c.awsDefaultRegion }}
{{- $a = append $a (printf "--aws-default-region=%s" $c.awsDefaultRegion) }}
{{- end }}
{{- $a = append $a (printf "--sts-regional-endpoint=%t" $c.stsRegionalEndpoint) }}
{{- if $c.roleSessionNameFromPod }}
{{- $a = append $a "--role-session-name-from-pod=true" }}
{{- end }}
{{- if $c.injectRegionWithoutRole }}
{{- $a = append $a "--inject-region-without-role=true" }}
{{- end }}
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
{{- $a = append $a (printf "--shutdown-delay=%s" $c.shutdownDelay) }}
{{- $a = append $a (printf "--shutdown-timeout=%s" $c.shutdownTimeout) }}
{{- $a = append $a (printf "--enable-debugging-handlers=%t" $c.enableDebuggingHandlers) }}
{{- $l := .Values.limits }}
{{- $a = append $a (printf "--max-connections=%d" (int64 $l.maxConnections)) }}
{{- $a = append $a (printf "--max-connections-per-peer=%d" (int64 $l.maxConnectionsPerPeer)) }}
{{- $a = append $a (printf "--max-concurrent-reviews=%d" (int64 $l.maxConcurrentReviews)) }}
{{- $a = append $a (printf "--max-body-bytes=%d" (int64 $l.maxBodyBytes)) }}
{{- $a = append $a (printf "--max-inflight-body-bytes=%d" (int64 $l.maxInflightBodyBytes)) }}
{{- $a = append $a (printf "--body-timeout=%s" $l.bodyTimeout) }}
{{- $a = append $a (printf "--first-request-timeout=%s" $l.firstRequestTimeout) }}
{{- $a = append $a (printf "--idle-timeout=%s" $l.idleTimeout) }}
{{- $a = append $a (printf "--http2-max-concurrent-streams=%d" (int64 $l.http2MaxConcurrentStreams)) }}
{{- range .Values.extraArgs }}
{{- $a = append $a (toString .) }}
{{- end }}
{{- toYaml $a }}
{{- end }}
