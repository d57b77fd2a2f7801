'use strict';
'require baseclass';
'require rpc';

// The AirPlay speaker's card on LuCI's status overview page. Values go in as text nodes
// (inside arrays): a lone string child would be set as innerHTML, and titles come from
// any sender on the network.

var callStatus = rpc.declare({
	object: 'luci.raopd',
	method: 'status',
	expect: { }
});

return baseclass.extend({
	title: _('AirPlay speaker'),

	load: function() {
		return L.resolveDefault(callStatus(), { state: 'stopped' });
	},

	render: function(st) {
		var np = st.now_playing || {};
		var rows = [
			[ _('Speaker'), st.name || '-', 'name' ],
			[ _('State'), st.state || 'stopped', 'state' ],
			[ _('Sender'), st.sender || '-', 'sender' ],
			[ _('Playing'), [ np.artist, np.title ].filter(function(x) { return x; }).join(' – ') || '-', 'playing' ]
		];
		return E('table', { 'class': 'table' }, rows.map(function(r) {
			return E('tr', { 'class': 'tr' }, [
				E('td', { 'class': 'td left', 'width': '33%' }, [ r[0] ]),
				E('td', { 'class': 'td left', 'data-raopd': r[2] }, [ r[1] ])
			]);
		}));
	}
});
