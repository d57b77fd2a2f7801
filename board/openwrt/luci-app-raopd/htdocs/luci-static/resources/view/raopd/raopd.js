'use strict';
'require view';
'require dom';
'require form';
'require poll';
'require rpc';
'require ui';

// Settings of /etc/config/raopd (section 'main'), the speaker's live status (polled every
// 3 s from the rpcd backend `luci.raopd`, which asks the daemon with `raopd status`) and
// playback buttons that go through `raopd ctl` to the sender (DACP).

var callStatus = rpc.declare({
	object: 'luci.raopd',
	method: 'status',
	expect: { }
});

var callControl = rpc.declare({
	object: 'luci.raopd',
	method: 'control',
	params: [ 'command' ],
	expect: { }
});

function fmtVolume(db) {
	if (db == null)
		return '-';
	if (db <= -144)
		return _('muted');
	return '%.1f dB'.format(db);
}

function fmtUptime(s) {
	if (s == null)
		return '-';
	var d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
	return d > 0 ? '%dd %dh %dm'.format(d, h, m) : '%dh %dm %ds'.format(h, m, s % 60);
}

function fmtDuration(s) {
	if (s == null)
		return null;
	s = Math.floor(s);
	return '%d:%02d'.format(Math.floor(s / 60), s % 60);
}

// Every value from the daemon or a sender goes into the page as a text node: LuCI's E() and
// dom.content() set a lone string child as innerHTML, and a title or artist is whatever any
// sender on the network chose to send.
function statusRows(st) {
	var np = st.now_playing || {};
	var stats = st.stats || {};
	var buf = stats.buffer || {};
	var render = stats.render || {};
	var clock = stats.clock || {};
	var state = st.state || 'stopped';
	var playing = (state == 'playing');
	var position = fmtDuration(np.position_s);
	var duration = fmtDuration(np.duration_s);

	if (playing && np.play_status == 'paused')
		state = 'paused';

	var rows = [
		[ _('State'), E('span', { 'data-raopd': 'state' }, [ state ]) ],
		[ _('Speaker name'), E('span', { 'data-raopd': 'name' }, [ st.name || '-' ]) ],
		[ _('Sender'), st.sender || '-' ],
		[ _('Title'), E('span', { 'data-raopd': 'title' }, [ np.title || '-' ]) ],
		[ _('Artist'), E('span', { 'data-raopd': 'artist' }, [ np.artist || '-' ]) ],
		[ _('Album'), E('span', { 'data-raopd': 'album' }, [ np.album || '-' ]) ],
		[ _('Position'), position ? (duration ? position + ' / ' + duration : position) : '-' ],
		[ _('Volume'), playing ? fmtVolume(st.volume_db) : '-' ],
		[ _('Sync error (now / largest)'), render.sync_error_us != null
			? '%d / %d µs'.format(render.sync_error_us, render.max_sync_error_us) : '-' ],
		[ _('Start error'), render.start_error_us != null ? '%d µs'.format(render.start_error_us) : '-' ],
		[ _('Clock drift'), clock.drift_ppm != null ? '%.1f ppm'.format(clock.drift_ppm) : '-' ],
		[ _('Packets received / lost / recovered'),
			buf.received != null ? '%d / %d / %d'.format(buf.received, buf.lost, buf.recovered) : '-' ],
		[ _('Silence inserted / frames skipped / underruns'),
			render.silence_frames != null
				? '%d / %d / %d'.format(render.silence_frames, render.skipped_frames, stats.underruns || 0) : '-' ],
		[ _('Uptime'), E('span', { 'data-raopd': 'uptime' }, [ fmtUptime(st.uptime_s) ]) ]
	];

	return E('table', { 'class': 'table' }, rows.map(function(r) {
		return E('tr', { 'class': 'tr' }, [
			E('td', { 'class': 'td left', 'width': '33%' }, [ r[0] ]),
			E('td', { 'class': 'td left' }, [ r[1] ])
		]);
	}));
}

return view.extend({
	load: function() {
		return L.resolveDefault(callStatus(), { state: 'stopped' });
	},

	control: function(command) {
		return callControl(command).then(function(res) {
			if (!res || res.ok !== true)
				ui.addNotification(null, E('p', [ _('The speaker did not do it: %s')
					.format((res && res.error) || _('no reply')) ]), 'warning');
		});
	},

	// The buttons work only while a sender that can be remote-controlled (it sent DACP-ID and
	// Active-Remote) holds the speaker. The middle one is Pause while audio plays and Play
	// while the sender reports it paused: explicit commands, so a click never toggles the
	// wrong way on a status up to 3 s old.
	renderControls: function(st) {
		var np = st.now_playing || {};
		var usable = (st.state == 'playing' && st.remote_control === true);
		var paused = (np.play_status == 'paused');
		var buttons = [
			[ 'previous', _('Previous') ],
			paused ? [ 'play', _('Play') ] : [ 'pause', _('Pause') ],
			[ 'next', _('Next') ],
			[ 'volumedown', _('Volume −') ],
			[ 'volumeup', _('Volume +') ]
		];
		return E('div', { 'class': 'cbi-page-actions', 'style': 'text-align:left' },
			buttons.map(L.bind(function(b) {
				return E('button', {
					'class': 'cbi-button cbi-button-action',
					'data-raopd-command': b[0],
					'disabled': usable ? null : '',
					'click': ui.createHandlerFn(this, 'control', b[0])
				}, [ b[1] ]);
			}, this)).concat([
				usable ? null : E('span', { 'class': 'cbi-value-description' },
					[ _('Available while a sender that accepts remote control plays.') ])
			]));
	},

	render: function(status) {
		var m, s, o;
		var statusNode = E('div', { 'id': 'raopd-status' }, [ statusRows(status), this.renderControls(status) ]);

		poll.add(L.bind(function() {
			return L.resolveDefault(callStatus(), { state: 'stopped' }).then(L.bind(function(st) {
				dom.content(statusNode, [ statusRows(st), this.renderControls(st) ]);
			}, this));
		}, this), 3);

		// The page's heading and description are written below, above the status; a Map title
		// would repeat them under it.
		m = new form.Map('raopd');

		s = m.section(form.NamedSection, 'main', 'raopd', _('Settings'));
		s.addremove = false;

		o = s.option(form.Flag, 'enabled', _('Enabled'));
		o.default = '1';
		o.rmempty = false;

		o = s.option(form.Value, 'name', _('Speaker name'),
			_('The name senders show. Empty: the router\'s host name.'));
		o.datatype = 'maxlength(50)';

		o = s.option(form.Value, 'output', _('Sound card'),
			_('An ALSA device: <code>alsa:default</code>, <code>alsa:hw:0</code>, <code>alsa:plughw:1,0</code>.'));
		o.placeholder = 'alsa:default';

		o = s.option(form.Value, 'password', _('Password'),
			_('Senders must give this password. Empty: no password.'));
		o.password = true;

		o = s.option(form.DynamicList, 'interface', _('Networks'),
			_('Serve and announce the speaker on these networks only (e.g. <code>lan</code>). Empty: every interface, the WAN side included.'));
		o.datatype = 'network';

		o = s.option(form.Value, 'port', _('RTSP port'));
		o.datatype = 'port';
		o.placeholder = '5000';

		o = s.option(form.Value, 'latency_offset_ms', _('Latency offset (ms)'),
			_('Moves the sound in time: positive plays later (to line up with a TV or another room), negative earlier (to make up for an amplifier\'s own delay).'));
		o.datatype = 'range(-2000,2000)';
		o.placeholder = '0';

		o = s.option(form.Flag, 'wait_for_output', _('Wait for the sound card'),
			_('Keep running while the sound card is missing (a USB DAC plugged in later) and tell senders why they cannot play.'));
		o.default = '1';
		o.rmempty = false;

		o = s.option(form.Value, 'udp_port_base', _('First UDP port'),
			_('Audio streams use 10 UDP ports from this one (for a firewall rule). 0: any free port.'));
		o.datatype = 'range(0,65526)';
		o.placeholder = '0';

		o = s.option(form.ListValue, 'session_interruption', _('A second sender'));
		o.value('deny', _('is told the speaker is busy'));
		o.value('allow', _('takes over'));
		o.default = 'deny';

		o = s.option(form.Value, 'session_timeout', _('Session timeout (s)'),
			_('A sender silent this long loses the speaker.'));
		o.datatype = 'range(1,86400)';
		o.placeholder = '60';

		o = s.option(form.Value, 'on_start', _('Command when audio starts'),
			_('A shell command, e.g. to switch an amplifier on.'));

		o = s.option(form.Value, 'on_stop', _('Command when audio stops'));

		o = s.option(form.Value, 'idle_timeout', _('Idle time before that command (s)'));
		o.datatype = 'range(1,86400)';
		o.placeholder = '10';

		o = s.option(form.ListValue, 'log_level', _('Log level'),
			_('Messages go to the system log (<code>logread -e raopd</code>).'));
		[ 'error', 'warn', 'info', 'debug' ].forEach(function(l) { o.value(l); });
		o.default = 'warn';

		return m.render().then(L.bind(function(mapEl) {
			return E([], [
				E('h2', { 'name': 'content' }, [ _('AirPlay speaker') ]),
				E('div', { 'class': 'cbi-map-descr' }, [
					_('raopd plays music from iPhones, Macs, iTunes and other AirPlay senders on this router\'s sound card.') ]),
				E('div', { 'class': 'cbi-section' }, [
					E('h3', {}, [ _('Now playing') ]),
					statusNode
				]),
				mapEl
			]);
		}, this));
	}
});
