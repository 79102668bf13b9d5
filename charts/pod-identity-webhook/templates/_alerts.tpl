{{/*
The alert rule group, as the body of a Prometheus rules file (`groups:`). The PrometheusRule
renders it as its spec; hack/render-deploy.sh writes it with the default values to
deploy/monitoring/prometheus-rules.yaml for Prometheus without the operator. The chart
README's "Monitoring" section is the runbook of each alert, and tests/alerts/ holds promtool's
unit tests of them.

The API server counts its calls under the webhook's name (webhook.name), not the
configuration's: apiserver_admission_webhook_* {name, type="admit"}. `{{` {{ ... }} `}}` is
Prometheus's own templating, written out literally.
*/}}
{{- define "piw.alertGroups" -}}
{{- $r := .Values.metrics.prometheusRule }}
{{- $api := printf "name=%q,type=\"admit\"" .Values.webhook.name }}
{{- with $r.apiServerSelector }}
{{- $api = printf "%s,%s" $api . }}
{{- end }}
{{- $own := $r.webhookSelector }}
{{- if not $own }}
{{- if include "piw.urlMode" . }}
{{- fail "metrics.prometheusRule.webhookSelector is required with webhook.url: the webhook runs outside the cluster, so the chart does not know the labels its scraped series get; give PromQL matchers such as job=\"pod-identity-webhook\"" }}
{{- end }}
{{- $own = printf "job=%q,namespace=%q" (include "piw.metricsServiceName" .) (include "piw.namespace" .) }}
{{- end }}
groups:
  - name: pod-identity-webhook
    rules:
      - alert: PodIdentityWebhookFailOpen
        # The first call that fails after an API server starts creates the series with the
        # value 1, which increase() cannot see: a series absent a window ago counts too.
        expr: |-
          sum(increase(apiserver_admission_webhook_fail_open_count{ {{- $api -}} }[{{ $r.failOpen.window }}])) > 0
          or
          sum(apiserver_admission_webhook_fail_open_count{ {{- $api -}} } unless apiserver_admission_webhook_fail_open_count{ {{- $api -}} } offset {{ $r.failOpen.window }}) > 0
        labels:
          {{- include "piw.alertLabels" (dict "r" $r "severity" $r.failOpen.severity) | nindent 10 }}
        annotations:
          summary: Pods were created without pod-identity-webhook, so without AWS credentials.
          description: >-
            The API server could not call the webhook {{ .Values.webhook.name }} and, as
            failurePolicy Ignore says, admitted about {{`{{ printf "%.0f" $value }}`}} pod(s) in the
            last {{ $r.failOpen.window }} without it: they run without AWS_ROLE_ARN or
            their token and fail at their first AWS call. Find why the calls fail
            (PodIdentityWebhookCallsFailing, PodIdentityWebhookDown, the API server's log
            "Failed calling webhook, failing open"), then re-create those pods;
            `pod-identity-webhook doctor NAMESPACE/SERVICEACCOUNT` lists the ones to restart.
          {{- with $r.runbookBaseUrl }}
          runbook_url: {{ . }}#podidentitywebhookfailopen
          {{- end }}
      - alert: PodIdentityWebhookCallsFailing
        expr: |-
          sum(rate(apiserver_admission_webhook_request_total{ {{- $api -}} ,code!="200"}[5m]))
          /
          sum(rate(apiserver_admission_webhook_request_total{ {{- $api -}} }[5m]))
          > {{ $r.callsFailing.ratio }}
        for: {{ $r.callsFailing.for }}
        labels:
          {{- include "piw.alertLabels" (dict "r" $r "severity" $r.callsFailing.severity) | nindent 10 }}
        annotations:
          summary: The API server's calls to pod-identity-webhook fail.
          description: >-
            {{`{{ $value | humanizePercentage }}`}} of the API server's calls to the webhook
            {{ .Values.webhook.name }} failed over the last 5 minutes. With failurePolicy
            Ignore those pods start without AWS credentials, with Fail they are not created.
            Check that the webhook's pods are ready and its Service has endpoints, that the
            API server reaches them (network policies, firewalls between the control plane
            and the nodes), and that the caBundle of the MutatingWebhookConfiguration
            matches the serving certificate (the API server's log names the error).
          {{- with $r.runbookBaseUrl }}
          runbook_url: {{ . }}#podidentitywebhookcallsfailing
          {{- end }}
      - alert: PodIdentityWebhookDown
        expr: |-
          (sum(pod_identity_webhook_ready{ {{- $own -}} }) or vector(0)) < 1
        for: {{ $r.down.for }}
        labels:
          {{- include "piw.alertLabels" (dict "r" $r "severity" $r.down.severity) | nindent 10 }}
        annotations:
          summary: No replica of pod-identity-webhook is ready.
          description: >-
            No replica selected by {{ $own }} has reported itself ready for
            {{ $r.down.for }}: the webhook's Service has no ready endpoints, and new pods get
            no AWS credentials (failurePolicy Ignore) or are not created (Fail). Look at the
            pods (kubectl get pods, describe, logs): an image the nodes cannot pull, a crash,
            or readiness held back by its reasons (GET /readyz on the metrics port says
            which). Also check that Prometheus still scrapes them.
          {{- with $r.runbookBaseUrl }}
          runbook_url: {{ . }}#podidentitywebhookdown
          {{- end }}
      - alert: PodIdentityWebhookSlowCalls
        expr: |-
          histogram_quantile(0.99, sum by (le) (rate(apiserver_admission_webhook_admission_duration_seconds_bucket{ {{- $api -}} }[5m])))
          > {{ mulf .Values.webhook.timeoutSeconds $r.slowCalls.timeoutFraction }}
        for: {{ $r.slowCalls.for }}
        labels:
          {{- include "piw.alertLabels" (dict "r" $r "severity" $r.slowCalls.severity) | nindent 10 }}
        annotations:
          summary: The API server's calls to pod-identity-webhook take close to their timeout.
          description: >-
            The slowest 1% of the API server's calls to the webhook {{ .Values.webhook.name }}
            took {{`{{ $value | humanizeDuration }}`}} or more over the last 5 minutes, against a
            timeout of {{ .Values.webhook.timeoutSeconds }}s; past it a call fails like an
            unreachable webhook. Compare with the webhook's own answer times
            (pod_identity_webhook_request_duration_seconds, on its dashboard): when they are
            short, the time goes on the way there (the network between the API server and the
            pods); when they are long, look for CPU throttling of the pods or ServiceAccounts
            missing from the cache (each waits up to config.serviceAccountLookupGracePeriod;
            pod_identity_webhook_lookup_fallbacks_total counts them).
          {{- with $r.runbookBaseUrl }}
          runbook_url: {{ . }}#podidentitywebhookslowcalls
          {{- end }}
      - alert: PodIdentityWebhookCacheNotSynced
        expr: |-
          pod_identity_webhook_used{ {{- $own -}} } == 0
        for: {{ $r.cacheNotSynced.for }}
        labels:
          {{- include "piw.alertLabels" (dict "r" $r "severity" $r.cacheNotSynced.severity) | nindent 10 }}
        annotations:
          summary: A pod-identity-webhook replica has not synced its ServiceAccount cache.
          description: >-
            {{`{{ $labels.instance }}`}} has not listed the cluster's ServiceAccounts since it
            started, {{ $r.cacheNotSynced.for }} or more ago, so it is not ready and takes no
            reviews. Its log says why ("cannot list or watch ServiceAccounts"): usually RBAC
            (the ClusterRole must allow get, list and watch on serviceaccounts) or no route
            to the API server.
          {{- with $r.runbookBaseUrl }}
          runbook_url: {{ . }}#podidentitywebhookcachenotsynced
          {{- end }}
      - alert: PodIdentityWebhookWatchFailing
        expr: |-
          increase(pod_identity_webhook_watch_errors_total{ {{- $own -}} }[5m]) > 0
        for: {{ $r.watchFailing.for }}
        labels:
          {{- include "piw.alertLabels" (dict "r" $r "severity" $r.watchFailing.severity) | nindent 10 }}
        annotations:
          summary: A pod-identity-webhook replica's {{`{{ $labels.resource }}`}} watch keeps failing.
          description: >-
            The {{`{{ $labels.resource }}`}} watch of {{`{{ $labels.instance }}`}} has failed
            again and again for {{ $r.watchFailing.for }}. The replica answers from what it
            already holds, so ServiceAccounts annotated (or mappings changed) since then are
            not seen and their pods get no or old credentials. Its log names the error
            ("cannot list or watch"): RBAC, the API server's health, or the network to it.
          {{- with $r.runbookBaseUrl }}
          runbook_url: {{ . }}#podidentitywebhookwatchfailing
          {{- end }}
      - alert: PodIdentityWebhookCertificateExpiresSoon
        expr: |-
          (pod_identity_webhook_certificate_expiry_timestamp_seconds{ {{- $own -}} } > 0) - time()
          < {{ $r.certificateExpiry.days }} * 86400
        labels:
          {{- include "piw.alertLabels" (dict "r" $r "severity" $r.certificateExpiry.severity) | nindent 10 }}
        annotations:
          summary: The serving certificate of pod-identity-webhook expires soon.
          description: >-
            The certificate {{`{{ $labels.instance }}`}} serves expires in
            {{`{{ $value | humanizeDuration }}`}}; after that the API server's calls fail TLS.
            Built-in certificates renew with a third of their life left, so a renewal failed:
            the log says why (often RBAC on the Secret). With cert-manager, look at the
            Certificate's status; with a Secret of your own, replace it: the webhook reloads
            the files and says so in pod_identity_webhook_certificate_reloads_total.
          {{- with $r.runbookBaseUrl }}
          runbook_url: {{ . }}#podidentitywebhookcertificateexpiressoon
          {{- end }}
      - alert: PodIdentityWebhookClientsRefused
        expr: |-
          sum by (reason) (rate(pod_identity_webhook_rejected_total{ {{- $own -}} {{- with $r.clientsRefused.ignoreReasons -}} ,reason!~{{ join "|" . | quote }}{{- end -}} }[5m]))
          > {{ $r.clientsRefused.perSecond }}
        for: {{ $r.clientsRefused.for }}
        labels:
          {{- include "piw.alertLabels" (dict "r" $r "severity" $r.clientsRefused.severity) | nindent 10 }}
        annotations:
          summary: pod-identity-webhook refuses clients ({{`{{ $labels.reason }}`}}).
          description: >-
            The webhook refused {{`{{ $value | humanize }}`}} clients per second for the reason
            {{`{{ $labels.reason }}`}} over the last 5 minutes. The limits keep a misbehaving
            client from starving the API server's reviews; a steady rate means one is at
            work (the log names its address, up to ten lines per 10 seconds), or, for
            overloaded and memory, that the API server's own traffic outgrew limits.* (raise
            them, or add replicas). docs/hardening.md describes each limit.
          {{- with $r.runbookBaseUrl }}
          runbook_url: {{ . }}#podidentitywebhookclientsrefused
          {{- end }}
{{- end }}

{{/* An alert's labels: its severity, then metrics.prometheusRule.alertLabels. */}}
{{- define "piw.alertLabels" -}}
severity: {{ .severity }}
{{- with .r.alertLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}
