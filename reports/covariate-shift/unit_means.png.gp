set terminal pngcairo size 800,500 font 'sans,10'
set output 'unit_means.png'
set datafile separator ','
set title 'Mean over units of each unit''s mean input (probe batch)' noenhanced
set xlabel 'step'
set ylabel 'mean of unit means'
set grid
set key below noenhanced
set format x '%g'
plot 'probes.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU / input of layer 3' ? column(3) : 1/0) with lines lw 2 title 'BN before ReLU / input of layer 3', \
     'probes.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU / input of layer 6' ? column(3) : 1/0) with lines lw 2 title 'BN before ReLU / input of layer 6', \
     'probes.csv' every ::1 using 2:(strcol(1) eq 'BN after ReLU / input of layer 3' ? column(3) : 1/0) with lines lw 2 title 'BN after ReLU / input of layer 3', \
     'probes.csv' every ::1 using 2:(strcol(1) eq 'BN after ReLU / input of layer 6' ? column(3) : 1/0) with lines lw 2 title 'BN after ReLU / input of layer 6', \
     'probes.csv' every ::1 using 2:(strcol(1) eq 'no BN / input of layer 2' ? column(3) : 1/0) with lines lw 2 title 'no BN / input of layer 2', \
     'probes.csv' every ::1 using 2:(strcol(1) eq 'no BN / input of layer 4' ? column(3) : 1/0) with lines lw 2 title 'no BN / input of layer 4'
