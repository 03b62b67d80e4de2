{{/* vim: set filetype=mustache: */}}
{{/*
Names
*/}}
{{- define "stepaudio.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "stepaudio.fullname" -}}
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

{{/* Name of one component's objects: <fullname>-<component> */}}
{{- define "stepaudio.componentName" -}}
{{- printf "%s-%s" (include "stepaudio.fullname" .ctx) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "stepaudio.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels: ONLY stable labels (never version, chart or profile), so upgrades never orphan pods.
Call with (dict "ctx" $ "name" "<component>").
*/}}
{{- define "stepaudio.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stepaudio.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}
{{- end -}}

{{/* All labels: selector labels + mutable metadata labels. */}}
{{- define "stepaudio.labels" -}}
{{ include "stepaudio.selectorLabels" . }}
helm.sh/chart: {{ include "stepaudio.chart" .ctx }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: stepaudio
stepaudio.ai/profile: {{ .ctx.Values.profile }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Upper-case env prefix: STEPAUDIO_<NAME>_ */}}
{{- define "stepaudio.envPrefix" -}}
{{- printf "STEPAUDIO_%s_" (upper .) -}}
{{- end -}}

{{/* True ("true") when the component runs on GPUs. Call with (dict "ctx" $ "name" "<component>"). */}}
{{- define "stepaudio.usesGpu" -}}
{{- $c := index .ctx.Values .name -}}
{{- if and $c.gpu (gt (int $c.gpu.count) 0) -}}true{{- end -}}
{{- end -}}

{{/*
Container image: <registry>/<repositoryPrefix>/<component>[-gpu]:<tag>[@digest]
A component's image.repository overrides the computed repository.
*/}}
{{- define "stepaudio.image" -}}
{{- $c := index .ctx.Values .name -}}
{{- $img := .ctx.Values.image -}}
{{- $repo := "" -}}
{{- if and $c.image $c.image.repository -}}
{{- $repo = $c.image.repository -}}
{{- else -}}
{{- $suffix := ternary "-gpu" "" (eq (include "stepaudio.usesGpu" .) "true") -}}
{{- $repo = printf "%s/%s%s" $img.repositoryPrefix .name $suffix -}}
{{- if $img.registry -}}{{- $repo = printf "%s/%s" $img.registry $repo -}}{{- end -}}
{{- end -}}
{{- $tag := default .ctx.Chart.AppVersion (default $img.tag (and $c.image $c.image.tag)) -}}
{{- $digest := default $img.digest (and $c.image $c.image.digest) -}}
{{- if $digest -}}
{{- printf "%s:%s@%s" $repo $tag $digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{- define "stepaudio.serviceAccountName" -}}
{{- $c := index .ctx.Values .name -}}
{{- if .ctx.Values.serviceAccount.create -}}
{{- include "stepaudio.componentName" . -}}
{{- else -}}
{{- default "default" .ctx.Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Hardened container securityContext (restricted Pod Security Standard). */}}
{{- define "stepaudio.containerSecurityContext" -}}
{{ toYaml .ctx.Values.containerSecurityContext }}
{{- end -}}

{{/* Scheduling for a component: its own nodeSelector/tolerations/affinity, plus the GPU pool when it uses GPUs. */}}
{{- define "stepaudio.scheduling" -}}
{{- $c := index .ctx.Values .name -}}
{{- $gpu := eq (include "stepaudio.usesGpu" .) "true" -}}
{{- $ns := dict -}}
{{- if $gpu }}{{- $ns = merge $ns (deepCopy .ctx.Values.gpu.nodeSelector) -}}{{- else -}}{{- $ns = merge $ns (deepCopy .ctx.Values.cpuNodeSelector) -}}{{- end -}}
{{- $ns = merge (deepCopy (default dict $c.nodeSelector)) $ns -}}
{{- with $ns }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $tol := concat (default list $c.tolerations) (ternary .ctx.Values.gpu.tolerations list $gpu) }}
{{- with $tol }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $c.affinity }}
affinity:
  {{- toYaml $c.affinity | nindent 2 }}
{{- else if and $gpu .ctx.Values.gpu.affinity }}
affinity:
  {{- toYaml .ctx.Values.gpu.affinity | nindent 2 }}
{{- end }}
{{- if and $gpu .ctx.Values.gpu.runtimeClassName }}
runtimeClassName: {{ .ctx.Values.gpu.runtimeClassName }}
{{- end }}
{{- if .ctx.Values.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: {{ .ctx.Values.topologySpread.zoneKey }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "stepaudio.selectorLabels" . | nindent 8 }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: {{ .ctx.Values.topologySpread.hostnameWhenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "stepaudio.selectorLabels" . | nindent 8 }}
{{- end }}
{{- end -}}

{{/* Resources with the GPU limit added (nvidia.com/gpu or a MIG resource name). */}}
{{- define "stepaudio.resources" -}}
{{- $c := index .ctx.Values .name -}}
{{- $res := deepCopy (default dict $c.resources) -}}
{{- if eq (include "stepaudio.usesGpu" .) "true" -}}
{{- $rn := default .ctx.Values.gpu.resourceName $c.gpu.resourceName -}}
{{- $limits := default dict $res.limits -}}
{{- $_ := set $limits $rn (int $c.gpu.count) -}}
{{- $_ := set $res "limits" $limits -}}
{{- $requests := default dict $res.requests -}}
{{- $_ := set $requests $rn (int $c.gpu.count) -}}
{{- $_ := set $res "requests" $requests -}}
{{- end -}}
{{ toYaml $res }}
{{- end -}}

{{/* OTLP endpoint the services export to. */}}
{{- define "stepaudio.otlpEndpoint" -}}
{{- if .Values.otelCollector.enabled -}}
{{- printf "http://%s-otel-collector:4317" (include "stepaudio.fullname" .) -}}
{{- else -}}
{{- .Values.telemetry.otlpEndpoint -}}
{{- end -}}
{{- end -}}

{{/* Kafka client env (TLS/SASL from existing secrets) for a component prefix. Call with (dict "ctx" $ "name" "gateway"). */}}
{{- define "stepaudio.kafkaEnv" -}}
{{- $p := include "stepaudio.envPrefix" .name -}}
{{- $k := .ctx.Values.kafka -}}
- name: {{ $p }}KAFKA_SECURITY_PROTOCOL
  value: {{ ternary (ternary "SASL_SSL" "SSL" $k.sasl.enabled) (ternary "SASL_PLAINTEXT" "PLAINTEXT" $k.sasl.enabled) $k.tls.enabled | quote }}
{{- if $k.tls.enabled }}
- name: {{ $p }}KAFKA_SSL_CAFILE
  value: /etc/stepaudio/kafka-tls/{{ $k.tls.caKey }}
{{- end }}
{{- if $k.sasl.enabled }}
- name: {{ $p }}KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
- name: {{ $p }}KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.existingSecret }}
      key: {{ $k.sasl.usernameKey }}
- name: {{ $p }}KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.existingSecret }}
      key: {{ $k.sasl.passwordKey }}
{{- end }}
{{- end -}}

{{/*
validateValues: fail early with messages that say which value to change.
*/}}
{{- define "stepaudio.validateValues" -}}
{{- $msgs := list -}}
{{- $v := .Values -}}
{{- $gpuComponents := list "tokenizer" "tts" "vocoder" "triton" -}}
{{- if eq $v.profile "stepaudio" -}}
  {{- if not $v.gpu.enabled -}}
    {{- $msgs = append $msgs "profile=stepaudio needs GPUs: set gpu.enabled=true and give triton, tokenizer and tts (and vocoder, when enabled) a gpu.count >= 1 (or use profile=embedded with values-embedded.yaml for a CPU-only cluster)" -}}
  {{- end -}}
  {{- range $n := $gpuComponents -}}
    {{- $c := index $v $n -}}
    {{- if and $c.enabled (lt (int $c.gpu.count) 1) -}}
      {{- $msgs = append $msgs (printf "profile=stepaudio runs %s on a GPU: set %s.gpu.count >= 1" $n $n) -}}
    {{- end -}}
  {{- end -}}
  {{- if not $v.modelStore.enabled -}}
    {{- $msgs = append $msgs "profile=stepaudio loads Step-Audio weights from the model store: set modelStore.enabled=true (modelStore.existingClaim or modelStore.size)" -}}
  {{- end -}}
{{- end -}}
{{- if eq $v.profile "embedded" -}}
  {{- if gt (int $v.triton.tensorParallelSize) 1 -}}
    {{- $msgs = append $msgs (printf "triton.tensorParallelSize=%d needs profile=stepaudio: the embedded CPU model runs with tensorParallelSize=1" (int $v.triton.tensorParallelSize)) -}}
  {{- end -}}
{{- end -}}
{{- range $n := $gpuComponents -}}
  {{- $c := index $v $n -}}
  {{- if and (gt (int $c.gpu.count) 0) (not $v.gpu.enabled) -}}
    {{- $msgs = append $msgs (printf "%s.gpu.count=%d but gpu.enabled=false: set gpu.enabled=true (GPU node pool, tolerations) or %s.gpu.count=0" $n (int $c.gpu.count) $n) -}}
  {{- end -}}
{{- end -}}
{{- $tp := int $v.triton.tensorParallelSize -}}
{{- $tg := int $v.triton.gpu.count -}}
{{- if and (gt $tg 0) (ne (mod $tg $tp) 0) -}}
  {{- $msgs = append $msgs (printf "triton.tensorParallelSize=%d does not divide triton.gpu.count=%d: each Triton pod needs a whole number of tensor-parallel groups (e.g. gpu.count=%d)" $tp $tg $tp) -}}
{{- end -}}
{{- if and (gt $tg 0) (lt $tg $tp) -}}
  {{- $msgs = append $msgs (printf "triton.gpu.count=%d is smaller than triton.tensorParallelSize=%d" $tg $tp) -}}
{{- end -}}
{{- $src := $v.triton.modelRepository.source -}}
{{- if and (eq $src "pvc") (not $v.modelStore.enabled) -}}
  {{- $msgs = append $msgs "triton.modelRepository.source=pvc needs modelStore.enabled=true" -}}
{{- end -}}
{{- if and (eq $src "objectStore") (not $v.triton.modelRepository.objectStore.uri) -}}
  {{- $msgs = append $msgs "triton.modelRepository.source=objectStore needs triton.modelRepository.objectStore.uri (e.g. s3://bucket/triton)" -}}
{{- end -}}
{{- if and $v.kafka.sasl.enabled (not $v.kafka.sasl.existingSecret) -}}
  {{- $msgs = append $msgs "kafka.sasl.enabled=true needs kafka.sasl.existingSecret (a Secret with the SASL username and password)" -}}
{{- end -}}
{{- if and $v.kafka.tls.enabled (not $v.kafka.tls.existingSecret) -}}
  {{- $msgs = append $msgs "kafka.tls.enabled=true needs kafka.tls.existingSecret (a Secret with the CA certificate)" -}}
{{- end -}}
{{- if and $v.rlhf.enabled (not $v.kafka.bootstrapServers) -}}
  {{- $msgs = append $msgs "rlhf.enabled=true consumes Kafka: set kafka.bootstrapServers" -}}
{{- end -}}
{{- if and $v.kafka.strimzi.enabled (not $v.kafka.strimzi.clusterName) -}}
  {{- $msgs = append $msgs "kafka.strimzi.enabled=true needs kafka.strimzi.clusterName (the Strimzi Kafka resource name)" -}}
{{- end -}}
{{- range $n := list "gateway" "vad" "tokenizer" "llm" "tools" "tts" "vocoder" "rlhf" "triton" -}}
  {{- $a := (index $v $n).autoscaling -}}
  {{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) -}}
    {{- $msgs = append $msgs (printf "%s.autoscaling.minReplicas=%d is above %s.autoscaling.maxReplicas=%d" $n (int $a.minReplicas) $n (int $a.maxReplicas)) -}}
  {{- end -}}
{{- end -}}
{{- if and $v.gateway.enabled (lt (int $v.gateway.drain.graceSeconds) 1) -}}
  {{- $msgs = append $msgs "gateway.drain.graceSeconds must be >= 1" -}}
{{- end -}}
{{- if $msgs -}}
{{- fail (printf "\n\nVALUES VALIDATION:\n- %s" (join "\n- " $msgs)) -}}
{{- end -}}
{{- end -}}
